"""Relay against SAQ, taskiq, streaq, bare arq, Celery and Dramatiq on one Redis: round trip, drain, idle cost,
commands per task.

Usage: .venv/bin/python -m bench.peers [--jobs 10000] [--rounds 3] [--out results.md]
       [--systems relay,arq,saq,taskiq,streaq,celery-prefork,celery-threads,dramatiq,dramatiq-tuned]
       [--workloads idle,round_trip,load,drain[,chain]] [--chain-steps 10,100]
       (--help lists the other options)

Round trips are measured at random arrival first (one client, a pause drawn uniformly from 0 to 20 ms before
each request, so every submit meets an idle system), then back to back. Drains are of no-op jobs and of jobs
that await once before returning. Chains (Relay's workflows, Celery's chain, Dramatiq's and streaq's pipelines;
the other peers have none) of N no-op steps are measured against the same N steps as single submits chained by
the client: ``--workloads chain`` runs only those (the default run leaves them out; add ``,chain`` to it).

The peers are installed into their own virtualenv (.bench-peers-venv/) on first run. Every process this
starts (redis-server, workers, clients, Relay's API) is stopped by PID when it ends, pass or fail.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from bench.common import machine_facts
from bench.peers import report, runner
from bench.peers.spec import DEFAULT_WORKLOADS, WORKLOADS
from bench.peers.systems import DEFAULT, SYSTEMS


def parse(argv: list[str] | None) -> tuple[runner.Options, Path | None]:
    defaults = runner.Options(systems=DEFAULT)
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=defaults.jobs, help="jobs per drain (0 skips drains)")
    p.add_argument("--rounds", type=int, default=defaults.rounds)
    p.add_argument("--systems", default=",".join(DEFAULT), help=f"comma-separated, of: {', '.join(SYSTEMS)}")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--rt-requests", type=int, default=defaults.rt_requests, help="sequential round trips per round")
    p.add_argument(
        "--rt-short-requests", type=int, default=defaults.rt_short_requests, help="... for clients at defaults"
    )
    p.add_argument(
        "--rt-max-pause-ms",
        type=float,
        default=defaults.rt_max_pause * 1000,
        help="random arrival: a pause drawn uniformly from 0 to this many ms before each round trip",
    )
    p.add_argument("--idle-seconds", type=float, default=defaults.idle_seconds)
    p.add_argument("--load-tasks", type=int, default=defaults.load_tasks, help="tasks in the commands-per-task run")
    p.add_argument("--load-clients", type=int, default=defaults.load_clients)
    p.add_argument("--scale-workers", default="1,2,4", help="worker process counts for Relay and bare arq ('' skips)")
    p.add_argument("--max-other-load", type=float, default=defaults.max_other_load, help="cores; above: noisy")
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated, of: {', '.join(WORKLOADS)} (chain only when named: it adds about a fifth)",
    )
    p.add_argument("--chain-steps", default="10,100", help="steps per chain (N), each measured")
    p.add_argument("--chains", type=int, default=defaults.chains, help="chains of N run one after another per round")
    p.add_argument("--chain-at-once", type=int, default=defaults.chain_at_once, help="chains run together (0 skips)")
    p.add_argument("--wait-quiet", type=float, default=defaults.wait_quiet, help="max s to wait for quiet per block")
    args = p.parse_args(argv)
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    workloads = frozenset(w.strip() for w in args.workloads.split(",") if w.strip())
    if not workloads or workloads - set(WORKLOADS):
        p.error(f"unknown workloads {sorted(workloads - set(WORKLOADS))}; known: {', '.join(WORKLOADS)}")
    chain_steps = tuple(int(n) for n in args.chain_steps.split(",") if n.strip())
    if any(n < 1 for n in chain_steps) or args.chains < 1:
        p.error("--chain-steps and --chains must be at least 1")
    if args.rt_max_pause_ms <= 0:
        p.error("--rt-max-pause-ms must be above 0 (back to back is measured as well)")
    options = runner.Options(
        systems=systems,
        jobs=args.jobs,
        rounds=args.rounds,
        rt_requests=args.rt_requests,
        rt_short_requests=args.rt_short_requests,
        rt_max_pause=args.rt_max_pause_ms / 1000,
        idle_seconds=args.idle_seconds,
        load_tasks=args.load_tasks,
        load_clients=args.load_clients,
        scale_workers=tuple(int(n) for n in args.scale_workers.split(",") if n.strip()),
        max_other_load=args.max_other_load,
        wait_quiet=args.wait_quiet,
        workloads=workloads,
        chain_steps=chain_steps,
        chains=args.chains,
        chain_at_once=args.chain_at_once,
    )
    return options, args.out


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: every process started is stopped by PID on the way out


def main(argv: list[str] | None = None) -> str:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    options, out = parse(argv)
    results = runner.run(options)
    command = ".venv/bin/python -m bench.peers " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report.render(results, command.strip(), machine_facts())
    print(text, flush=True)  # first: a report is never lost to the file's write
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)  # BENCHMARKS.md names files under build/, absent in a clone
        out.write_text(text)
    return text


if __name__ == "__main__":
    main()
