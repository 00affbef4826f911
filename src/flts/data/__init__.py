"""Data contract and preprocessing: pure, vectorised functions of their inputs."""

from flts.data.hashing import canonical_json, config_hash, content_digest
from flts.data.prepare import PreparedData, Splits, prepare, split, windows_from_frame
from flts.data.reader import TrafficTable, read_traffic_csv, validate_frame
from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec, Recipe
from flts.data.windows import Windows, encode_inputs, last_window, make_windows

__all__ = [
    "FeatureSpec",
    "MinMaxScaler",
    "PreparedData",
    "Recipe",
    "Splits",
    "TrafficTable",
    "Windows",
    "canonical_json",
    "config_hash",
    "content_digest",
    "encode_inputs",
    "last_window",
    "make_windows",
    "prepare",
    "read_traffic_csv",
    "split",
    "validate_frame",
    "windows_from_frame",
]
