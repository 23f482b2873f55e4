"""The ``clipzoo`` commands (train, sweeps, figures and tables) over ``runners/base/``, the run plumbing
every agent uses (options, run directories and checkpoints, random streams): docs/architecture.md."""
