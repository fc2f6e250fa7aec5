"""Workflows (issue #23): Celery's canvas (chains, groups, chords, maps) built from ordinary Relay tasks.

``canvas`` is the submitted form and its compiled steps (pure); ``store`` submits, reads, cancels and retries
workflows. The orchestration itself (a step's end releasing the next, a chord's callback once its last member
ended) runs in the Redis scripts that commit a step's end (``shared/lua/lib.lua``, ``relay_flow_step_ended``), and
the key layout is in ``shared/keys.py`` ("Workflows"). docs/workflows.md tells the whole story.
"""
