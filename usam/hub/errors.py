"""How Hub failures read: the network exceptions worth a :class:`~usam.errors.HubError`, and one-line causes."""

from __future__ import annotations


def network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client exceptions of whichever of httpx / requests is installed (a failed connection)."""
    errors: list[type[BaseException]] = []
    for mod in ("httpx2", "httpx", "requests"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        for name in ("HTTPError", "TransportError", "RequestException"):
            cls = getattr(m, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    return tuple(errors)


def short(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
