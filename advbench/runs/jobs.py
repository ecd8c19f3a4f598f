"""The jobs a run is made of, and their ids.

* ``<model>/train``: train the model (or load the pretrained file) and save it;
* ``<model>/clean``: clean predictions on the evaluated examples, randomness and gradient checks;
* ``<model>/<norm>/attack-<label>`` and ``<model>/<norm>/certify-<label>``: one attack or
  certifier under one threat model.

:func:`job_id` is the one place these ids are made; the results read records by them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

JobKind = Literal["train", "clean", "attack", "certify"]
JOB_KINDS: tuple[str, ...] = ("train", "clean", "attack", "certify")


def job_id(model: str, kind: str, norm: str | None = None, label: str | None = None) -> str:
    """The id of a job, which is also its record's path in ``jobs/`` (without ``.json``)."""
    if kind in ("train", "clean"):
        return f"{model}/{kind}"
    return f"{model}/{norm}/{kind}-{label}"


@dataclass
class Job:
    """One unit of work: its inputs come from the store, its output is one record.

    ``identity`` is what the spec says about the job (it seeds the job, so that every
    backend and every version of the code draws alike); ``key`` adds everything else
    that determines the result (backend, precision, code, data content): a job is redone
    whenever its key changes."""

    id: str
    kind: JobKind
    model: str
    key: str
    norm: str | None = None
    method: object | None = None  # the ComponentRef of the attack or certifier
    eps: list[float] = field(default_factory=list)
    identity: str = ""

    @property
    def seed(self) -> int:
        return int((self.identity or self.key)[:8], 16) % (2**31 - 1)
