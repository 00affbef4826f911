"""The public names of each package: a change to ``__all__`` is a decision, made here too.

Every exported name must resolve, and the lists below are the contract other code and users
import from; adding or removing a name means editing this file in the same change.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC: dict[str, set[str]] = {
    "flts.bus": {
        "BACKENDS", "Bus", "ConsumeStats", "DeadLetter", "Handler", "IdempotencyStore", "Lag",
        "Message", "RetryPolicy", "backend_class", "open_bus", "register_backend",
    },
    "flts.data": {
        "FeatureSpec", "MinMaxScaler", "PreparedData", "Recipe", "Splits", "TrafficTable",
        "Windows", "canonical_json", "config_hash", "content_digest", "encode_inputs",
        "last_window", "make_windows", "prepare", "read_traffic_csv", "split", "validate_frame",
        "windows_from_frame",
    },
    "flts.models": {"Forecaster", "MODEL_TYPES", "load_model", "model_class", "parse_model_types"},
    "flts.exceptions": {
        "AuthenticationError", "BusError", "ConfigurationError", "ConflictError",
        "DataValidationError", "DeadlineExceededError", "DependencyMissingError",
        "EventValidationError", "FLTSError", "FeatureMismatchError", "InfrastructureError",
        "MisdirectedError", "ModelError", "ModelNotFittedError", "ModelUnavailableError",
        "NotFoundError", "OverloadedError", "PayloadTooLargeError", "PipelineError", "RequestError",
        "UnavailableError", "UnsupportedMediaError", "PermissionDeniedError",
    },
    "flts.promotion": {
        "Backends", "CHAMPION_ALIAS", "Decision", "LeaderboardEntry", "PROMOTION_ROOT",
        "Promotion", "PromotionGate", "PromotionStore", "ReasonCode", "Recorded", "ScoringPolicy",
        "Verdict", "announce", "carry_out", "champion_alias_run_id", "clear_pending",
        "create_decision", "decision_key",
        "first_seen", "follow_registry_alias", "list_decisions", "mark_pending",
        "move_champion_alias", "pending",
        "pending_key", "promote_run", "read_decision", "read_versioned_decision",
        "replace_decision", "rollback_champion", "selected_event_id",
        "write_decision",
    },
    "flts.security": {
        "ANONYMOUS", "ANY_KEY", "OPEN", "PRINCIPAL_SCOPE_KEY", "SCOPES", "AccessPolicy",
        "AuthMiddleware", "KeyRing", "KeysFile", "Principal", "StoredKey", "create_key",
        "escape_formulas", "key_ring", "mint_key", "principal_of", "protect", "read_keys",
        "revoke_key", "write_keys",
    },
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_exported_members(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert set(exported) == PUBLIC[package]
    for name in exported:
        assert hasattr(module, name), f"{package}.{name} is exported but missing"


def test_every_error_is_in_the_tree() -> None:
    """Each exported error derives from FLTSError and answers with a real HTTP status."""
    exceptions = importlib.import_module("flts.exceptions")
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.FLTSError), name
        assert 400 <= cls.http_status < 600, name
