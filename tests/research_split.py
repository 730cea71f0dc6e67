"""The research code's split, re-implemented from its published algorithm, for tests to compare
`--strategy row` with: per emotion (angry, sad, happy, neutral), `sklearn.utils.shuffle` of every
row of its CSV in file order; the first int(0.7 n) are unlabelled pretrain; the rest, concatenated
in that class order, split by `train_test_split` 0.30 (ssl) then 0.3333 (finetune of the rest),
stratified, with the same seed."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils import shuffle

CLASS_ORDER = ("angry", "sad", "happy", "neutral")


def research_split(ids: list[str], labels: list[str], seed: int = 42) -> dict[str, set[str]]:
    """Partition -> row ids, for rows given in source order."""
    rows = pd.DataFrame({"id": ids, "label": labels})
    pretrain, labelled = [], []
    for emotion in CLASS_ORDER:
        part = shuffle(rows[rows["label"] == emotion], random_state=seed)
        cut = int(0.7 * len(part))
        pretrain.append(part[:cut])
        labelled.append(part[cut:])
    lab = pd.concat(labelled)
    ssl, rest = train_test_split(lab, test_size=0.30, stratify=lab["label"], random_state=seed)
    classifier, finetune = train_test_split(rest, test_size=0.3333, stratify=rest["label"], random_state=seed)
    parts = {"pretrain": pd.concat(pretrain), "ssl": ssl, "classifier": classifier, "finetune": finetune}
    return {p: set(frame["id"]) for p, frame in parts.items()}
