"""Tests that load the whole machine (hundreds of connections, fault injection under load, rolling deploys).

``scripts/test`` runs the suite on three processes with ``--dist loadgroup``: the tests marked ``@heavy`` all
go to one of them, one after another, so two of them never share the two cores (a stalled-readers test beside a
rolling deploy made both miss their deadlines). Without xdist the mark does nothing.
"""

from __future__ import annotations

import pytest

heavy = pytest.mark.xdist_group("heavy")
