"""Named presets (YAML): ``--config ppo_hopper`` loads ``configs/ppo_hopper.yaml``."""
