"""Hessian benchmark: closed-form Hessians against automatic differentiation.

Measures whether Hessians written as tensor-calculus expressions are still orders of magnitude
faster than those from automatic differentiation (Laue, Mitterreiter & Giesen, "Computing
Higher Order Derivatives of Matrix and Tensor Expressions", NeurIPS 2018).

``worker.hessian.params`` imports no torch because the API imports it to validate requests.
The other modules import torch and are loaded only where a job runs.
"""
