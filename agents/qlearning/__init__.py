"""The Q-learning run shared by the Tianshou agents (``agents/dqn.py``, ``agents/rainbow.py``).

One room per concept, read in the order a run uses them:
``options.py`` (their options, without torch or Tianshou), ``run.py`` (``QLearningRun``: envs ->
network and algorithm -> replay buffer and collector -> checkpoint or warm-up -> trainer ->
final diagnostics), ``networks.py`` (the Q-networks), ``streams.py`` (the random streams Tianshou
and torch draw from globally), ``replay.py`` (replay buffers), ``trainer.py`` (the exact replay
ratio, the optimizer factory that attaches the plug-ins, the trainer), ``lean_update.py`` (the
same update with less Python per step), ``logger.py`` (TensorBoard tags), and
``tianshou_internals.py`` (every private Tianshou attribute the zoo touches).
"""
