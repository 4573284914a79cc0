"""The rows of a run report's results table: which results.json keys it shows, labelled, in order (the
report's sections print them; the run loader checks those keys' values)."""

# (row key, label, paper key) — the results table, in this order; ``ours`` comes from results.json.
RESULT_ROWS = [
    ("coarse_test_acc", "Coarse test accuracy (the labels the network was trained on)", "coarse_test_acc"),
    ("recovery.test_acc", "Fine-label recovery, test — predicted coarse routing", "fine_test_acc"),
    ("recovery.oracle_test_acc", "Fine-label recovery, test — oracle (true) coarse routing", "oracle_test_acc"),
    ("recovery.train_acc", "Fine-label recovery, train", "fine_train_acc"),
    ("recovery.ari", "Recovery clustering ARI (test)", "ari"),
    ("recovery.nmi", "Recovery clustering NMI (test)", "nmi"),
    ("recovery_pursuit.test_acc", "Projection-pursuit split, test — predicted coarse routing", "pursuit_test_acc"),
    ("recovery_pursuit.oracle_test_acc", "Projection-pursuit split, test — oracle (true) coarse routing",
     "pursuit_oracle_test_acc"),
    ("probe.test_acc", "Supervised linear probe inside each superclass (upper bound, not recovery) — predicted "
     "routing", "probe_test_acc"),
    ("probe.oracle_test_acc", "Supervised linear probe inside each superclass — oracle (true) coarse routing",
     "probe_oracle_test_acc"),
    ("baselines.fine_trained", "Baseline: same network trained on the fine labels (fine test accuracy)",
     "fine_trained"),
    ("baselines.fine_trained.coarse_test_acc", "Baseline: that network's predictions mapped to superclasses "
     "(coarse test accuracy)", "fine_trained_coarse_test_acc"),
    ("baselines.raw_pixels", "Baseline: recovery from raw inputs (fine test accuracy) — predicted coarse routing",
     "raw_pixels"),
    ("baselines.raw_pixels.oracle_test_acc", "Baseline: recovery from raw inputs — oracle (true) coarse routing",
     "raw_pixels_oracle"),
    ("baselines.random_init", "Baseline: recovery from random-init network features — predicted coarse routing",
     "random_init"),
    ("baselines.random_init.oracle_test_acc", "Baseline: recovery from random-init network features — oracle (true) "
     "coarse routing", "random_init_oracle"),
    ("ratios.recovered_over_fine_trained", "Ratio: recovery (predicted routing) / same network trained on the fine "
     "labels", "recovered_over_fine_trained"),
    ("ratios.pursuit_over_fine_trained", "Ratio: projection-pursuit recovery / same network trained on the fine labels",
     "pursuit_over_fine_trained"),
    ("ratios.recovered_over_probe", "Ratio: recovery / linear probe (both predicted routing)", "recovered_over_probe"),
    ("ratios.oracle_recovered_over_oracle_probe", "Ratio: recovery / linear probe (both true coarse routing)",
     "oracle_recovered_over_oracle_probe"),
    ("recovery.label_noise.recovery_train_acc_clean", "Label noise: recovery on clean train samples",
     "noise_clean_train_acc"),
    ("recovery.label_noise.recovery_train_acc_corrupted_true_routing", "Label noise: recovery on corrupted train "
     "samples, routed to their true superclass", "noise_corrupted_train_acc_true_routing"),
    ("recovery.label_noise.net_agrees_noisy_label_corrupted", "Label noise: corrupted train samples where the net "
     "predicts the noisy label", "noise_memorised"),
    ("recovery.label_noise.nc1_clean", "Label noise: NC1 of the clean train samples (NC1)", "noise_nc1_clean"),
    ("recovery.label_noise.nc1_corrupted_noisy_labels", "Label noise: NC1 of the corrupted train samples by their "
     "noisy labels (NC1)", "noise_nc1_corrupted"),
]

# cifar10-finer (labels finer than the data): nothing is routed; the questions are whether the features keep the
# true classes together and whether they separate the pseudo classes
SPLIT_ROWS = [
    ("net_test_acc", "Pseudo-class test accuracy (the labels the network was trained on)", "net_test_acc"),
    ("true_class_test_acc", "True-class accuracy of the network (pseudo-class predictions mapped to their classes)",
     "true_class_test_acc"),
    ("recovery.test_acc", "True classes recovered by clustering all features (test, one group, no routing)",
     "fine_test_acc"),
    ("recovery.train_acc", "True classes recovered by clustering all features (train)", "fine_train_acc"),
    ("pseudo_recovery.oracle_test_acc", "Pseudo classes recovered by clustering inside each true class (test)",
     "pseudo_test_acc"),
    ("recovery.ari", "Recovery clustering ARI (test)", "ari"),
    ("recovery.nmi", "Recovery clustering NMI (test)", "nmi"),
    ("baselines.raw_pixels", "Baseline: recovery from raw inputs", "raw_pixels"),
    ("baselines.random_init", "Baseline: recovery from random-init network features", "random_init"),
]
