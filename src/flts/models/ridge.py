"""Ridge regression on the flattened, scaled lag window: a strong linear baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flts.data.windows import Windows
from flts.evaluation import score
from flts.models.base import Forecaster


class Ridge(Forecaster):
    """Linear map from ``lags x channels`` scaled inputs to ``horizon x targets`` scaled
    outputs with an unpenalised intercept.

    The penalty is chosen on the validation split (by the headline NRMSE in original units)
    from ``alphas``; one SVD of the training design serves every candidate penalty.
    """

    model_type = "RIDGE"
    batch_invariant = True
    default_params: ClassVar[dict[str, Any]] = {"alphas": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]}

    def _design(self, windows: Windows) -> np.ndarray:
        return self.encode(windows).reshape(len(windows), -1)

    def _fit(self, train: Windows, validation: Windows) -> None:
        X = self._design(train)
        Y = self.scaled_targets(train).reshape(len(train), -1)
        x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
        U, s, Vt = np.linalg.svd(X - x_mean, full_matrices=False)
        projected = U.T @ (Y - y_mean)
        X_val = self._design(validation)

        best: tuple[float, float, np.ndarray] | None = None
        history = []
        for alpha in self.params["alphas"]:
            coef = Vt.T @ ((s / (s**2 + alpha))[:, None] * projected)
            intercept = y_mean - x_mean @ coef
            prediction = self.decode(X_val @ coef + intercept)
            value = score(validation.targets, prediction, self.spec.targets).nrmse
            history.append({"alpha": alpha, "validation_nrmse": value})
            if best is None or value < best[0]:
                best = (value, float(alpha), coef)
        assert best is not None
        self._coef = best[2]
        self._intercept = y_mean - x_mean @ self._coef
        self.metadata.update(alpha=best[1], validation_nrmse=best[0], alpha_search=history)

    def _predict(self, windows: Windows) -> np.ndarray:
        n = len(windows)
        if self.spec.time_features:
            design = self._design(windows)
        else:  # encode and decode inline (same arithmetic): a serving call is mostly overhead
            scaler = self.input_scaler
            design = ((windows.x - scaler._offset) / scaler._scale).reshape(n, -1)
        # einsum's own loops sum each output in one fixed order (``@`` calls BLAS, whose order
        # depends on the number of rows): a window's forecast never depends on its batch.
        product = np.einsum("nk,kt->nt", design, self._coef)
        scaled = (product + self._intercept).reshape(n, self.spec.horizon, -1)
        target = self.target_scaler
        restored: np.ndarray = scaled * target._scale + target._offset
        return restored

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef, intercept)`` in scaled space, for serving the model as plain numpy."""
        return self._coef, self._intercept

    def _save_state(self, directory: Path) -> None:
        np.savez(directory / "weights.npz", coef=self._coef, intercept=self._intercept)

    def _load_state(self, directory: Path) -> None:
        with np.load(directory / "weights.npz", allow_pickle=False) as state:
            self._coef = state["coef"]
            self._intercept = state["intercept"]
