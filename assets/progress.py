"""Progress listeners: `curate run` registers one to print each stage as it finishes (the UI has its own)."""


from typing import Callable

_listeners: list[Callable[[str, str, object], None]] = []


def listen(callback: Callable[[str, str, object], None]) -> None:
    _listeners.append(callback)


def clear() -> None:
    _listeners.clear()


def notify(stage: str, partition: str, summary: object) -> None:
    for callback in list(_listeners):
        callback(stage, partition, summary)
