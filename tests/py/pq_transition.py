"""A status change of a real pywats_client PersistentQueue item, timed when it
happens: when the item's data file is renamed (Path.replace in safe_rename).
update() then rewrites the metadata with an fsync, whose time (milliseconds to
tens of them on a busy disk) is not part of the transition."""
import dataclasses
import pathlib
import time


def transition(q, item_id, action, *args):
    """Applies `action` to a copy of the item (update() renames only when handed
    a copy: it compares with the stored item) and returns time.monotonic() of
    the data file's rename."""
    item = dataclasses.replace(q.get(item_id))
    getattr(item, action)(*args)
    original, renamed = pathlib.Path.replace, []

    def replace(path, target):
        result = original(path, target)
        if pathlib.Path(target).suffix == ".wsjf":
            renamed.append(time.monotonic())
        return result

    pathlib.Path.replace = replace
    try:
        q.update(item)
    finally:
        pathlib.Path.replace = original
    return renamed[0]
