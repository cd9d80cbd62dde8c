"""The orchestration every front end calls (`rl run`, `rl start`, `rl exec`, `rl stop/rm`, and the
coming rl-oci and `rl build`): plan -> launch -> session. The launcher (outside), the container
side (inside: PID 1's set-up, init), detach/monitor/logs, exec, the recorded state and the
operations on it (control). It calls image/, network/, cgroups/, security/ and primitives/;
nothing below imports it (tests/unit/test_layering.py)."""
