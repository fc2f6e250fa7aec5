"""The one rule for "is this try the last?", which every path that ends or starts a try asks: a claimed job about
to start (``Engine._refusal``), a failure the policy would retry (``outcomes.decide_failure``), arq's ``Retry``
raised by a task (``JobRun._retry_requested``) and a lost worker's job taken over (``Engine._take_over``).

A *round* of a job is its pickups since it was submitted (or since a manual retry started a new round:
``JobRecord.tries_base``). A round may take ``cap`` pickups:

- at least ``RELAY_MAX_PICKUPS``, so a job whose worker is lost (a crash costs a pickup) runs again, but never
  forever; and at least ``1 + max_retries`` of the task's policy, so its retries fit;
- at most ``1 + max_retries`` of the submit, when it gave one: a submit may lower the tries, never raise them
  (``max_retries: 0`` means one try, whatever ends it).

Pickup ``number`` (1 for the round's first) is the *last* when ``number >= cap``: a failure, a ``Retry`` or a
lost worker then ends the job. It is *beyond* the cap when ``number > cap`` (earlier pickups were lost without a
take-over's verdict, say): it must not run at all. A shutdown's re-queue gives its pickup back, so it costs none.
Failures are also counted on their own: a policy retries at most ``max_retries`` of them (``decide_failure``).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.jobs import JobRecord


@dataclass(frozen=True)
class TryCount:
    """Where one pickup stands in its round (see the module docstring)."""

    number: int  # this pickup's number in its round, 1 for the first
    cap: int  # pickups the round may take

    @property
    def last(self) -> bool:
        """No pickup may follow this one."""
        return self.number >= self.cap

    @property
    def beyond(self) -> bool:
        """This pickup is past the cap: it must not run."""
        return self.number > self.cap


def allowed_retries(policy_retries: int, record: JobRecord) -> int:
    """Failures the policy may retry: its ``max_retries``, lowered (never raised) by the submit's."""
    return policy_retries if record.max_retries is None else min(policy_retries, record.max_retries)


def cap(max_pickups: int, policy_retries: int, submit_retries: int | None) -> int:
    """Pickups one round may take (see the module docstring)."""
    most = max(max_pickups, 1 + policy_retries)
    return most if submit_retries is None else min(most, 1 + submit_retries)


def count(record: JobRecord, try_number: int, policy_retries: int, max_pickups: int) -> TryCount:
    """Pickup ``try_number`` (the job's, across rounds) of the job ``record``, whose task's policy allows
    ``policy_retries`` (0 for a task this worker does not know)."""
    return TryCount(try_number - record.tries_base, cap(max_pickups, policy_retries, record.max_retries))
