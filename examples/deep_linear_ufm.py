"""Paper B's deep linear unconstrained-features model: closed-form optimum vs a numerical solution.

    python examples/deep_linear_ufm.py          # ~10 s

M = 3 bias-free linear layers, MSE, imbalanced classes. The closed form gives each class's feature-mean and
classifier norms (orthogonal directions, lengths set by the class sizes); L-BFGS on the same objective from a
random start should land on it. With stronger regularisation the small classes' optimum is exactly zero
("minority collapse").
"""


from nclab.theory import compare_to_prediction, measured_geometry, predict_ufm, solve_ufm


def main(iters: int = 1500):
    counts, M, lam = [200, 100, 50, 50], 3, 5e-4
    pred = predict_ufm(counts, depth=M, lambda_w=lam, lambda_h=lam)
    sol = solve_ufm(counts, M, lam, lam, optimizer="lbfgs", iters=iters, prediction=pred)
    measured = measured_geometry(sol)
    cmp = compare_to_prediction(measured, pred)
    worst = max(max(v) for v in cmp["rel_diff"].values())
    print(f"objective: solved {sol.objective():.10g}, closed form {pred.objective:.10g}")
    print("class  n     ‖w_k‖² predicted  ‖w_k‖² solved   ‖h̄_k‖² predicted  ‖h̄_k‖² solved")
    for p, m in zip(pred.per_class, measured["per_class"]):
        print(f"{p['class']:5d}  {p['n']:4d}  {p['w_norm2']:16.6g}  {m['w_norm2']:13.6g}  "
              f"{p['h_norm2']:16.6g}  {m['h_norm2']:13.6g}")
    print(f"largest relative difference to the closed form: {worst:.2e}")

    strong = predict_ufm([500, 500, 50, 5], depth=M, lambda_w=5e-3, lambda_h=5e-3)
    collapsed = [p["class"] for p in strong.per_class if p["collapses"]]
    print(f"counts 500/500/50/5, λ = 5e-3: classes {collapsed} collapse to zero at the optimum")
    return {"objective": sol.objective(), "pred_objective": pred.objective, "worst_rel_diff": worst,
            "collapsed": collapsed, "strong": strong}


if __name__ == "__main__":
    main()
