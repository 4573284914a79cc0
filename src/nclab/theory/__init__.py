"""Theory lab: the deep linear unconstrained-features model (closed form + numerical solver)."""

from nclab.theory.closed_form import UFMPrediction, b_M, collapse_threshold, predict_ufm, solve_scalar
from nclab.theory.solver import UFMSolution, compare_to_prediction, measured_geometry, solve_ufm, ufm_metrics

__all__ = ["UFMPrediction", "UFMSolution", "b_M", "collapse_threshold", "compare_to_prediction",
           "measured_geometry", "predict_ufm", "solve_scalar", "solve_ufm", "ufm_metrics"]
