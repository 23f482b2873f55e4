"""Run the weight-clipping authors' PPO script under gymnasium 1.x, as a run directory that
``clipzoo table`` and ``clipzoo plot`` read like any ClipZoo run (claim 0 of docs/reproductions.md).

The script is ``rl_experiments/ppo_continuous_action_clipped.py`` of
github.com/mohmdelsayed/weight-clipping (with its ``weight_clipping.py``). It was written for
gymnasium 0.29, and two of its calls need 0.29's forms: under 1.x its observation wrapper
raises, and its episode bookkeeping raises (same-step autoreset) or finds no episode at all
(next-step). It runs here as it is, file untouched, with two adapters installed in gymnasium
before it starts:

- ``TransformObservation(env, func)``: 1.x requires the observation space as a third argument;
  the adapter passes None, which 1.x reads as "the wrapped env's space" (the script's clip to
  [-10, 10] keeps observations inside it).
- The script reads finished episodes from ``infos["final_info"]`` as a list with one dict or
  None per env, 0.29's form. The adapter's ``SyncVectorEnv`` writes that list from 1.x's
  episode statistics (``episode`` under the ``_episode`` mask), so every episode is logged at
  the step it ends, with its return and length.

``--autoreset same-step`` (the default) resets an env within the step its episode ends, as
0.29's vector envs did, so the script runs as its authors ran it. ``next-step`` is 1.x's
default: the step after an episode's end returns the first observation of the next with reward
0, one extra transition per episode that the script trains on.

    git clone https://github.com/mohmdelsayed/weight-clipping ../weight-clipping
    git -C ../weight-clipping checkout 7834795
    python scripts/authors_ppo.py ../weight-clipping RUN_DIR [--autoreset next-step] -- \\
        --env-id Hopper-v5 --total-timesteps 300000 --seed 1 --no-cuda

RUN_DIR receives the script's TensorBoard file, ``config.json`` (the script's parsed arguments,
the autoreset mode and the arguments given), ``attempts.json`` (the command, the checkout's
commit and whether its tree is clean, the two files' sha256, this launcher's commit) and
``status.json``; ``config.json`` and a ``running`` status are written first, so a run that
dies is listed as interrupted. The directory's lock is held while the script runs. The script
cannot resume, so a run that did not complete is started again from scratch (the script is
deterministic on one thread: the same seed gives the same run); a complete run of the same
arguments is left as it is, and a directory holding anything else (a ClipZoo run, a complete
run of other arguments) is refused. Torch runs on one thread (OMP_NUM_THREADS=1) unless the
environment sets another count.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the script imports torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runners, from a checkout without an install
from runners.base.console import run_and_report  # noqa: E402
from runners.base.errors import UsageError  # noqa: E402
from runners.base.files import atomic_write_text  # noqa: E402
from runners.base.rundir import (  # noqa: E402
    ATTEMPTS_FILE,
    CONFIG_FILE,
    LOCK_FILE,
    STATUS_FILE,
    RunDirectory,
    code_version,
    read_status,
)

SCRIPT = Path("rl_experiments") / "ppo_continuous_action_clipped.py"
HELPER = Path("rl_experiments") / "weight_clipping.py"
WORK = ".authors_script"  # the script's working directory inside RUN_DIR: its runs/ folder lands here
EVENTS = "events.out.tfevents."


def install_gymnasium_adapters(autoreset: str) -> None:
    """Give gymnasium 1.x the two 0.29 forms the script uses (module docstring)."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    same_step = autoreset == "same-step"

    class TransformObservation(gym.wrappers.TransformObservation):
        def __init__(self, env, func, observation_space=None):
            super().__init__(env, func, observation_space)

    class SyncVectorEnv(gym.vector.SyncVectorEnv):
        def __init__(self, env_fns, **kwargs):
            mode = AutoresetMode.SAME_STEP if same_step else AutoresetMode.NEXT_STEP
            super().__init__(env_fns, autoreset_mode=mode, **kwargs)

        def step(self, actions):
            observations, rewards, terminations, truncations, infos = super().step(actions)
            # where 1.x puts the statistics of the episodes that ended: with the final observation
            # (same step) or in this step's own infos (next step)
            ended = infos.get("final_info", {}) if same_step else infos
            infos = {key: value for key, value in infos.items() if key not in ("final_info", "_final_info")}
            if "_episode" in ended and ended["_episode"].any():
                episode = ended["episode"]
                infos["final_info"] = [
                    {"episode": {"r": episode["r"][i], "l": episode["l"][i]}} if done else None
                    for i, done in enumerate(ended["_episode"])
                ]
            return observations, rewards, terminations, truncations, infos

    gym.wrappers.TransformObservation = TransformObservation
    gym.vector.SyncVectorEnv = SyncVectorEnv


def checkout_version(checkout: Path) -> dict:
    """The checkout's commit and clean state (None outside git) and the two files' sha256."""

    def git(*command: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(checkout), *command], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit,
        "clean": None if changes is None else not changes,
        "sha256": {str(name): hashlib.sha256((checkout / name).read_bytes()).hexdigest() for name in (SCRIPT, HELPER)},
    }


def write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


OWN_FILES = {CONFIG_FILE, STATUS_FILE, ATTEMPTS_FILE, LOCK_FILE, WORK, "videos"}  # and the events file


def refuse_foreign(run_dir: Path) -> None:
    """Refuse, in one line, a directory holding files this launcher does not write (a ClipZoo run, say)."""
    if not run_dir.exists():
        return
    config = json.loads((run_dir / CONFIG_FILE).read_text()) if (run_dir / CONFIG_FILE).is_file() else {}
    own = OWN_FILES | set(config.get("outputs", []))  # what the script wrote into its runs/<name>/
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in own and not p.name.startswith(EVENTS))
    if foreign or (config and config.get("program") != str(SCRIPT)):
        what = ", ".join(foreign) if foreign else f"a {CONFIG_FILE} of another program"
        raise UsageError(f"{run_dir} is not a run directory of the authors' script ({what}); give another one")


def complete_with(run_dir: Path, launch: dict) -> bool:
    """True if ``run_dir`` holds a complete run of this launch; a complete run of other arguments is refused."""
    if (read_status(run_dir) or {}).get("state") != "complete":
        return False
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    made = {key: config.get(key) for key in launch}
    if made != launch:
        raise UsageError(f"{run_dir} holds a complete run of other arguments ({made}); give another directory")
    return True


def run(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/authors_ppo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of github.com/mohmdelsayed/weight-clipping")
    parser.add_argument("run_dir", type=Path, help="where the run's files go (e.g. SWEEP/Hopper-v5/authors/seed_1)")
    parser.add_argument("--autoreset", choices=["same-step", "next-step"], default="same-step")
    parser.epilog = "after --: the script's own arguments (e.g. -- --env-id Hopper-v5 --seed 1 --no-cuda)"
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, script_args = parser.parse_args(argv[:split]), argv[split + 1 :]
    checkout, run_dir = args.checkout.resolve(), args.run_dir.resolve()
    missing = [str(name) for name in (SCRIPT, HELPER) if not (checkout / name).is_file()]
    if missing:
        raise UsageError(f"{args.checkout} is not a checkout of mohmdelsayed/weight-clipping: no {', '.join(missing)}")
    install_gymnasium_adapters(args.autoreset)
    sys.path.insert(0, str(checkout / SCRIPT.parent))  # the script imports weight_clipping from its folder
    sys.argv = [str(checkout / SCRIPT), *script_args]
    if {"-h", "--help"} & set(script_args):  # the script's own help; no run
        runpy.run_path(str(checkout / SCRIPT), run_name="__main__")
        return

    launch = {"program": str(SCRIPT), "autoreset": args.autoreset, "script_args": script_args}
    refuse_foreign(run_dir)
    directory = RunDirectory(run_dir)
    with directory.claim():  # the lock: a second launch on this directory is refused while this one runs
        if complete_with(run_dir, launch):
            print(f"{run_dir} is complete; nothing to do")
            return
        refuse_foreign(run_dir)  # as checked before the lock, now that no other launch can write here
        # a run that did not finish: the script cannot resume, so it starts again from scratch
        config = json.loads((run_dir / CONFIG_FILE).read_text()) if (run_dir / CONFIG_FILE).is_file() else {}
        shutil.rmtree(run_dir / WORK, ignore_errors=True)
        shutil.rmtree(run_dir / "videos", ignore_errors=True)
        for leftover in [
            *(run_dir / name for name in config.get("outputs", [])),
            *run_dir.glob(EVENTS + "*"),
            run_dir / CONFIG_FILE,
            run_dir / STATUS_FILE,
            run_dir / ATTEMPTS_FILE,
        ]:
            leftover.unlink(missing_ok=True)
        work = run_dir / WORK
        work.mkdir()
        # written now, so that `clipzoo table` lists a run that dies as interrupted, not as nothing
        write_json(run_dir / CONFIG_FILE, launch)
        write_json(
            run_dir / ATTEMPTS_FILE,
            [
                {
                    "started": directory.started,
                    "host": socket.gethostname(),
                    "command": [sys.executable, str(Path(__file__).resolve()), *argv],
                    **checkout_version(checkout),
                    "launcher": code_version(),
                    "resumed_from_step": None,
                    "exact": True,
                }
            ],
        )
        directory.set_status("running", global_step=0)
        try:
            os.chdir(work)
            script = runpy.run_path(str(checkout / SCRIPT), run_name="__main__")
            outputs = [p for p in work.glob("runs/*/*") if p.is_file()]
            events = [p for p in outputs if p.name.startswith(EVENTS)]
            if len(events) != 1:
                raise RuntimeError(f"expected one TensorBoard file below {work}/runs, found {len(events)}")
            for output in outputs:  # the events file, and a saved model with --save-model
                output.rename(run_dir / output.name)
            if (work / "videos").is_dir():  # --capture-video
                (work / "videos").rename(run_dir / "videos")
            os.chdir(run_dir)
            shutil.rmtree(work)
        except KeyboardInterrupt:
            directory.set_status("interrupted", global_step=0)
            raise
        except SystemExit as stop:  # the script's argument parser refused an option: no run was made
            directory.set_status("failed", error=f"the script exited with code {stop.code}")
            raise
        except Exception as error:  # the script's own failure (an env it cannot make, say), in one line
            directory.set_status("failed", error=f"{type(error).__name__}: {error}")
            raise UsageError(f"the authors' script failed: {type(error).__name__}: {error}") from None
        parsed = vars(script["args"])
        written = sorted(p.name for p in outputs if p not in events)
        write_json(run_dir / CONFIG_FILE, {**parsed, **launch, "outputs": written})
        directory.set_status("complete", global_step=script["global_step"], total_timesteps=parsed["total_timesteps"])
    print(f"done: {run_dir} ({script['global_step']:,} env steps in {time.time() - directory.started:.0f} s)")


if __name__ == "__main__":
    run_and_report(run, sys.argv[1:])
