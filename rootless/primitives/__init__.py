"""Building blocks shared by every package that starts or prepares processes in namespaces: the
sync channel (channel), entering a user namespace with its id maps (userns), mount operations and
the loop that applies them (mounts). They sit below image/, network/, cgroups/, security/,
doctor/ and runtime/, and import only kernel/, idmap, errors, paths, fileio and jsonc
(tests/unit/test_layering.py)."""
