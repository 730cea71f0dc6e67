"""Flow `resplit`: a stratified, contract-checked split version of the warehouse's units.

Deployment `resplit/nightly` runs it at 02:00 (cron `0 2 * * *`) in $AFFECTFLOW_TIMEZONE. On
unchanged data and parameters it writes nothing; a split that fails its contract is recorded as
`rejected`, the previous split stays current, and the run fails naming the rule.
"""

from __future__ import annotations

from enum import StrEnum

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.schedules import Cron
from pydantic import BaseModel, ConfigDict, Field, model_validator

from affectflow.forms import apply_form_schema
from affectflow.settings import load_settings
from data_contracts.splits import Stages
from flows import flow
from tasks.publish_split import SplitOutcome, SplitRejected, publish_split, report_markdown
from tasks.run_registry import current_run_id, tracked_run
from tasks.split import DEFAULT_CLASS_ORDER, SplitSpec

NIGHTLY_CRON = "0 2 * * *"
TEST_FRACTION = 0.15


class Strategy(StrEnum):
    grouped = "grouped"
    row = "row"


class Mode(StrEnum):
    stable = "stable"
    reshuffle = "reshuffle"


class GroupBy(StrEnum):
    video = "video"
    subject = "subject"


class ResplitParams(BaseModel):
    """How to split: every field is one control of the resplit/nightly run form."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(default=Strategy.grouped, description="grouped: whole videos (or all of a subject's) "
                               "go to one partition; row: each frame row is a unit, reproducing the research code "
                               "after a test holdout of whole videos; e.g. grouped")
    mode: Mode = Field(default=Mode.stable, description="stable: keep earlier assignments, place new units; "
                       "reshuffle: a fresh split with a new seed (the test holdout is kept); e.g. stable")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Split seed (integer); empty: the current split's seed "
                             "(stable) or that plus one (reshuffle), 42 for a first split; e.g. 7")
    pretrain_fraction: float = Field(default=0.7, ge=0, lt=1, description="Share of each class that is unlabelled "
                                     "pretrain data (0 keeps every label, for small data sets; unlabelled units and "
                                     "classes too small to stratify still go to pretrain); e.g. 0.7")
    ssl_fraction: float = Field(default=0.7, gt=0, lt=1, description="Share (0-1) of the labelled part for ssl; the three shares sum to 1, e.g. 0.7")
    classifier_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share (0-1) of the labelled part for classifier, e.g. 0.2")
    finetune_fraction: float = Field(default=0.1, gt=0, lt=1, description="Share (0-1) of the labelled part for finetune, e.g. 0.1")
    test_fraction: float | None = Field(default=None, ge=0, lt=1, description="Held-out test share (0-1) of each class, "
                                        "carved first in whole videos (subjects when grouped by subject). Empty: "
                                        "the current split's (its holdout is kept), 0.15 for a first split; 0 with "
                                        "strategy row: exactly the research code's split, and no test metrics; e.g. 0.15")
    group_by: GroupBy = Field(default=GroupBy.video, description="grouped strategy: what may not be split across "
                              "partitions, a video or a subject (the unit trained on stays the video or image); e.g. video")
    class_order: list[str] = Field(default_factory=lambda: list(DEFAULT_CLASS_ORDER), min_length=1,
                                   description="Order the row strategy concatenates the labelled classes in, e.g. [angry, sad, happy, neutral]")
    dry_run: bool = Field(default=False, description="Compute and check the split, write nothing, e.g. false")

    @model_validator(mode="after")
    def _consistent(self) -> ResplitParams:
        labelled = self.ssl_fraction + self.classifier_fraction + self.finetune_fraction
        if abs(labelled - 1) > 1e-6:
            raise ValueError(f"ssl, classifier and finetune fractions must sum to 1 (they sum to {labelled:g})")
        if self.strategy is Strategy.row and self.group_by is GroupBy.subject:
            raise ValueError("group_by applies to the grouped strategy; the row strategy's unit is a frame row")
        if len(set(self.class_order)) != len(self.class_order):
            raise ValueError("class_order names a class twice")
        return self

    def spec(self) -> SplitSpec:
        test = TEST_FRACTION if self.test_fraction is None else self.test_fraction
        stages = Stages(test=test, pretrain=self.pretrain_fraction, ssl=self.ssl_fraction,
                        classifier=self.classifier_fraction, finetune=self.finetune_fraction)
        return SplitSpec(strategy=self.strategy.value, stages=stages, group_by=self.group_by.value,
                         class_order=tuple(self.class_order))


@task(name="publish-split", cache_policy=NO_CACHE)
def publish(params: ResplitParams) -> SplitOutcome:
    return publish_split(load_settings().home, params.spec(), params.mode.value, params.seed, params.dry_run,
                         test_given=params.test_fraction is not None)


@flow(name="resplit", validate_parameters=True)
def resplit(params: ResplitParams = ResplitParams()) -> dict:  # noqa: B008 - pydantic default is immutable here
    """Split the warehouse's units into pretrain / ssl / classifier / finetune / test, check the
    split contract, and publish the version; the report is a markdown artifact `split-report`.

    Args:
        params: How to split (strategy, mode, seed, partition shares); each field says its unit and an example
    """
    logger = get_run_logger()
    home = load_settings().home
    with tracked_run(home, current_run_id(), "resplit", logger.warning):
        outcome = publish(params)
    create_markdown_artifact(report_markdown(outcome), key="split-report",
                             description=f"split {outcome.split_id or '(not written)'}: {outcome.status}")
    logger.info("%s", outcome.message)
    if outcome.status == "rejected":
        raise SplitRejected(outcome.message)
    return outcome.as_dict()


def deployment():
    return apply_form_schema(resplit.to_deployment(
        name="nightly",
        description="Nightly stable re-split: new units are placed, assigned units keep their partition.",
        schedule=Cron(NIGHTLY_CRON, timezone=load_settings().timezone),
        tags=["affectflow"],
        enforce_parameter_schema=True,
    ))


__all__ = ["ResplitParams", "deployment", "resplit"]
