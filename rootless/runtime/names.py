"""Names for containers started without --name, in podman's adjective_noun style, so
`rl ps` always shows a NAMES column a person can type back (`rl rm calm_heron`)."""

from __future__ import annotations

import os

ADJECTIVES = (
    "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "daring", "eager",
    "fancy", "gentle", "glad", "golden", "happy", "humble", "jolly", "keen", "kind", "lively",
    "lucid", "merry", "misty", "modest", "nimble", "noble", "patient", "polite", "proud",
    "quiet", "quick", "rapid", "serene", "sharp", "shy", "silent", "snappy", "steady", "sunny",
    "swift", "tender", "tidy", "vivid", "warm", "wise", "witty", "young", "zealous",
)
NOUNS = (
    "badger", "beaver", "bison", "crane", "dingo", "dolphin", "eagle", "falcon", "ferret",
    "finch", "gecko", "gibbon", "heron", "ibis", "jackal", "koala", "lemur", "lynx", "marmot",
    "marten", "newt", "ocelot", "orca", "osprey", "otter", "panda", "pelican", "puffin",
    "quail", "raven", "robin", "salmon", "seal", "shrew", "sparrow", "stoat", "swan", "tapir",
    "tern", "toucan", "turtle", "viper", "walrus", "weasel", "wombat", "wren", "yak", "zebra",
)


def random_name() -> str:
    a, n = os.urandom(2)
    return f"{ADJECTIVES[a % len(ADJECTIVES)]}_{NOUNS[n % len(NOUNS)]}"
