"""Building blocks every package that starts processes in namespaces shares: the sync channel
(channel), entering a user namespace with its id maps (userns), mount operations and the loop
that applies them (mounts). Below image/, network/, cgroups/, security/, doctor/ and runtime/;
they import only kernel/, idmap, errors, paths and fileio (tests/unit/test_layering.py)."""
