"""Environment factories shared by every agent: env-id checks, MuJoCo and Atari wrapper stacks."""
