"""The public checks: check_grad, check_vjp/check_jvp, eps_sweep, warm_up."""
