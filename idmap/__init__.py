"""uid/gid mapping for rootless user namespaces, usable on its own.

    subids = read_subids("/etc/subuid", user, uid)      # what the user owns
    plan = plan_mapping(uid=..., ..., helpers_available=find_helpers() is not None)
    apply_mapping(child_pid, plan, find_helpers())      # from the parent, after unshare

Imports nothing from `rootless`; keep its import cheap (it runs on every `rl run`).
"""

from idmap.apply import apply_mapping, find_helpers
from idmap.errors import IdMapError, SubidFileError
from idmap.plan import IdMapping, IdRange, plan_mapping
from idmap.subid import SubidRange, read_subids
from idmap.user import current_user

__all__ = [
    "IdMapError",
    "IdMapping",
    "IdRange",
    "SubidFileError",
    "SubidRange",
    "apply_mapping",
    "current_user",
    "find_helpers",
    "plan_mapping",
    "read_subids",
]
