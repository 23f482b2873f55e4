"""The plasticity plug-ins every agent shares: ``options.py`` (their flags, without torch),
``assembly.py`` (``PlasticityPlugins``: builds what the flags ask for and attaches it to an
optimizer, weight clipping last), ``clipping.py`` (weight clipping), ``interventions.py`` (the
other interventions) and ``optimizers.py`` (Adam, Madam)."""
