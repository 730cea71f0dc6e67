"""The build-features flow's parameters, importable without Prefect, so that `affectflow
build-features` checks what was typed, and answers a re-run with nothing to do, before Prefect
loads (~2 s). The flow's signature is made of the same types (`flows.build_features`), and a
test holds the two to the same names, types and defaults."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BuildParams", "ExtractorName", "Fps", "MaxFrames", "MinConfidence", "NumFaces", "Source",
           "TaskRunnerName", "Workers"]

ExtractorName = Literal["auto", "mediapipe", "openface-csv", "openface", "pyfeat"]
TaskRunnerName = Literal["thread", "process", "dask"]
Source = Annotated[str, Field(min_length=1)]
Fps = Annotated[float | None, Field(gt=0, le=240)]
MaxFrames = Annotated[int | None, Field(ge=1)]
MinConfidence = Annotated[float, Field(ge=0, le=1)]
NumFaces = Annotated[int, Field(ge=1, le=16)]
Workers = Annotated[int, Field(ge=1, le=64)]


class BuildParams(BaseModel):
    """One build-features run's parameters, as the flow takes them."""

    model_config = ConfigDict(extra="forbid")

    source: Source
    labels: str | None = None
    extractor: ExtractorName = "auto"
    fps: Fps = None
    max_frames: MaxFrames = None
    min_confidence: MinConfidence = 0.7
    num_faces: NumFaces = 1
    workers: Workers = 2
    task_runner: TaskRunnerName = "thread"
    dask_address: str | None = None
    force: bool = False
    relabel: bool = False
