"""Wiring the registry check into commands and reports: a checker from options, checks of published or stored tags."""

from __future__ import annotations

from typing import Callable


from .errors import DEFAULT_TIMEOUT, DEFAULT_TTL, TokenConfigurationError
from .tokens import TokenMinter
from .walk import RegistryChecker


def checker_from_options(
    url: str,
    *,
    issuer: str | None = None,
    service: str | None = None,
    key_file: str | None = None,
    cert_file: str | None = None,
    ttl: int = DEFAULT_TTL,
    timeout: float = DEFAULT_TIMEOUT,
) -> RegistryChecker:
    """A checker from command-line options; raises TokenConfigurationError when they are incomplete.

    Token options go together: issuer, service and key (the certificate is
    optional, recommended: the key id is then checked against it).
    """
    given = {"--registry-token-issuer": issuer, "--registry-token-service": service, "--registry-token-key": key_file}
    minter = None
    if any(v for v in given.values()) or cert_file:
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise TokenConfigurationError(f"token authentication also needs {', '.join(missing)}")
        minter = TokenMinter(issuer, service, key_file, cert_file, ttl)
    try:
        return RegistryChecker(url, minter, timeout=timeout)
    except ValueError as exc:
        raise TokenConfigurationError(str(exc)) from None


def checker_from_settings(settings) -> RegistryChecker | None:
    """A checker from anything with ``check_registry`` and ``registry_token_{issuer,service,key,cert}``
    attributes (the command line's namespace, the sidecar's configuration); None without a URL.
    Raises TokenConfigurationError for token options without a URL, or incomplete ones."""
    token_options = (
        settings.registry_token_issuer,
        settings.registry_token_service,
        settings.registry_token_key,
        settings.registry_token_cert,
    )
    if not settings.check_registry:
        if any(token_options):
            raise TokenConfigurationError("the --registry-token-* options need --check-registry URL")
        return None
    issuer, service, key_file, cert_file = token_options
    return checker_from_options(settings.check_registry, issuer=issuer, service=service, key_file=key_file, cert_file=cert_file)


def check_published_tags(report, checker: RegistryChecker, *, kind: str = "not-servable") -> None:
    """Subscribe to ``report``: check each tag as soon as the engine publishes it.

    A tag the registry would not serve becomes a problem of ``kind`` (so the
    run exits 1). The check runs in the publishing thread, right after the
    tag's ``current/link`` is written.
    """
    from ...sync.report import Problem

    def on_event(event: str, data: dict) -> None:
        if event != "tag-published":
            return
        reasons = checker.check_tag(data["repository"], data["tag"], data.get("digest"))
        report.count("tags_checked")
        if reasons:
            report.add_problem(
                Problem(kind, "; ".join(reasons[:5]), repository=data["repository"], tag=data["tag"], digest=data.get("digest"))
            )

    report.subscribe(on_event)


def check_backend_tags(
    backend,
    checker: RegistryChecker,
    report,
    *,
    repositories: Callable[[str], bool] | None = None,
    kind: str = "not-servable",
) -> None:
    """Ask the registry for every tag ``backend`` holds (the digest its ``current/link`` names).

    For ``syncagent verify TARGET --check-registry URL``: a tag not served, or
    served with another digest, becomes a problem of ``kind``.
    """
    from ...sync.discovery import iter_repositories, read_repository
    from ...sync.report import Problem

    for repository in iter_repositories(backend):
        if repositories is not None and not repositories(repository):
            continue
        state = read_repository(backend, repository)
        for tag, digest in sorted(state.tags.items()):
            reasons = checker.check_tag(repository, tag, str(digest))
            report.count("tags_checked")
            if reasons:
                report.add_problem(Problem(kind, "; ".join(reasons[:5]), repository=repository, tag=tag, digest=str(digest)))


__all__ = ["check_backend_tags", "check_published_tags", "checker_from_options", "checker_from_settings"]
