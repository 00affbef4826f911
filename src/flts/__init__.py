"""FLTS: Forecasting Load Time Series."""

__version__ = "0.1.0"
