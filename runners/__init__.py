"""Run plumbing: the command line, run directories and checkpoints, sweeps and plots."""
