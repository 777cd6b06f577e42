"""Fixture submissions for Lab 2 (see lab1.py for how they are used)."""

from tests.submissions.lab1 import _LIARS, Submission, build_notebook, with_answers  # noqa: F401 (build_notebook: used via this module)

#: Points of each autograded test cell of Lab 2.
FULL_MARKS = {
    "test_ex1_adapt_resnet18_shapes_and_weights": 2,
    "test_ex2_lr_range_test_schedule_losses_restore": 2,
    "test_ex3_autocast_dtype_and_amp_step": 2,
    "test_ex4_top_losses_sorted_eval_mode": 2,
    "test_ex5_grad_cam_matches_reference": 3,
    "test_ex6_head_only_optimizer_grads_and_updates": 2,
    "test_ex7_discriminative_lrs_groups_unfrozen": 2,
    "test_ex8_fine_tune_two_stages_match_reference": 3,
    "test_ex9_parse_mura_path": 1,
    "test_ex10_split_by_patient_no_leak": 2,
    "test_ex11_class_weights_match_sklearn": 1,
    "test_ex12_threshold_maximises_youden": 1,
    "test_ex13_cohen_kappa_matches_sklearn": 2,
    "test_ex14_aggregate_studies_mean_and_max": 2,
    "test_ex15_per_body_part_metrics_match_sklearn": 1,
}

#: Written answers, graded by hand: {grade_id: points}.
MANUAL = {"q1_wrong_augmentations_for_xrays": 2.0, "q2_mean_or_max_for_screening": 2.0}

ALTERNATIVE = {
    "ex1_adapt_resnet18": '''
def adapt_resnet18(model, in_channels, num_classes):
    """Copy the conv1 settings by hand; weights via mean * 3 / in_channels."""
    weight = model.conv1.weight.detach()
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.conv1.weight.data = (weight.mean(dim=1, keepdim=True) * 3 / in_channels).expand(-1, in_channels, -1, -1).clone()
    model.fc = nn.Linear(512, num_classes)
    return model
''',
    "ex2_lr_range_test": '''
def lr_range_test(model, loader, loss_fn, optimizer, start_lr, end_lr, num_steps, device):
    """itertools.cycle over the batches and a geometric factor."""
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    factor = (end_lr / start_lr) ** (1 / (num_steps - 1))
    lrs, losses, best = [], [], float("inf")
    model.train()
    batches = itertools.cycle(loader)
    for step in range(num_steps):
        lr = start_lr * factor ** step
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        optimizer.zero_grad()
        loss = loss_fn(model(x.to(device)), y.to(device))
        loss.backward()
        optimizer.step()
        value = loss.item()
        lrs.append(lr)
        losses.append(value)
        best = min(best, value)
        if math.isnan(value) or math.isinf(value) or value > 4 * best:
            break
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    return lrs, losses
''',
    "ex3_mixed_precision": '''
AUTOCAST_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}

def autocast_dtype(device):
    return AUTOCAST_DTYPES.get(device.type)

def mixed_precision_step(model, images, labels, loss_fn, optimizer, scaler):
    dtype = autocast_dtype(images.device)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if dtype is None:
        loss = loss_fn(model(images), labels)
    else:
        with torch.autocast(images.device.type, dtype=dtype):
            loss = loss_fn(model(images), labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss)
''',
    "ex4_top_losses": '''
def top_losses(model, loader, k, device):
    model.eval()
    losses = []
    with torch.inference_mode():
        for x, y in loader:
            losses.extend(F.cross_entropy(model(x.to(device)), y.to(device), reduction="none").tolist())
    losses = torch.tensor(losses)
    order = torch.argsort(losses, descending=True, stable=True)[:k]
    return order, losses[order]
''',
    "ex5_grad_cam": '''
def grad_cam(model, target_layer, image, class_index):
    """Keep the activations with retain_grad instead of a tensor hook."""
    store = {}
    def keep(module, inputs, output):
        output.retain_grad()
        store["a"] = output
    handle = target_layer.register_forward_hook(keep)
    model.eval()
    try:
        score = model(image[None])[0, class_index]
        model.zero_grad()
        score.backward()
    finally:
        handle.remove()
    activations = store["a"][0]
    alpha = store["a"].grad[0].mean(dim=(1, 2), keepdim=True)
    cam = F.relu((alpha * activations).sum(0)).detach()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).cpu()
''',
    "ex6_head_only_optimizer": '''
def head_only_optimizer(model, head, lr):
    """Freeze everything, then unfreeze the head; the optimizer gets the head's parameters directly."""
    model.requires_grad_(False)
    head.requires_grad_(True)
    return torch.optim.AdamW(head.parameters(), lr=lr)
''',
    "ex7_discriminative_param_groups": '''
def discriminative_param_groups(stages, head_lr, factor):
    """Walk from the head backwards, dividing the learning rate as we go."""
    groups, lr = [], head_lr
    for stage in reversed(stages):
        stage.requires_grad_(True)
        groups.insert(0, {"params": [p for p in stage.parameters()], "lr": float(lr)})
        lr = lr / factor
    return groups
''',
    "ex8_fine_tune": '''
def fine_tune(model, head, stages, loader, loss_fn, device, head_epochs, full_epochs, head_lr, factor=10.0,
              max_steps_per_epoch=None):
    """One loop over a schedule of (optimizer, epochs)."""
    losses = []
    schedule = [("head", head_epochs), ("all", full_epochs)]
    for stage_name, epochs in schedule:
        if stage_name == "head":
            optimizer = head_only_optimizer(model, head, head_lr)
        else:
            optimizer = torch.optim.AdamW(discriminative_param_groups(stages, head_lr * 0.1, factor))
        for epoch in range(epochs):
            losses.append(float(train.train_one_epoch(model, loader, loss_fn, optimizer, device,
                                                      max_steps=max_steps_per_epoch, show_progress=False)))
    return losses
''',
    "ex9_parse_mura_path": '''
import re

def parse_mura_path(path):
    match = re.search(r"(train|valid)[/\\\\]XR_(\\w+)[/\\\\](patient\\d+)[/\\\\](study\\d+)_(positive|negative)", str(path))
    split, part, patient, study, outcome = match.groups()
    return {"split": split, "body_part": part, "patient": patient, "study": patient + "/" + study,
            "label": int(outcome == "positive")}
''',
    "ex10_split_by_patient": '''
def split_by_patient(table, val_fraction, seed):
    patients = table["patient"].drop_duplicates().sort_values().to_numpy()
    chosen = np.random.default_rng(seed).permutation(patients)[: round(val_fraction * len(patients))]
    mask = table["patient"].isin(chosen)
    return table.loc[~mask], table.loc[mask]
''',
    "ex11_class_weights": '''
def class_weights(labels, num_classes):
    counts = torch.tensor([(labels == c).sum().item() for c in range(num_classes)], dtype=torch.float32)
    return (1.0 / counts) * len(labels) / num_classes
''',
    "ex12_choose_threshold": '''
def choose_threshold(probabilities, labels):
    """Try every distinct probability as a threshold."""
    best_threshold, best_j = 0.5, -1.0
    positives, negatives = (labels == 1).sum().item(), (labels == 0).sum().item()
    for t in sorted(set(probabilities.tolist())):
        predicted = probabilities >= t
        j = (predicted & (labels == 1)).sum().item() / positives - (predicted & (labels == 0)).sum().item() / negatives
        if j > best_j:
            best_threshold, best_j = t, j
    return float(best_threshold)
''',
    "ex13_cohen_kappa": '''
def cohen_kappa(labels, predictions):
    """Through a confusion matrix, as in Lab 1."""
    classes = int(torch.cat([labels, predictions]).max()) + 1
    matrix = torch.zeros(classes, classes, dtype=torch.float64)
    for t, p in zip(labels.tolist(), predictions.tolist()):
        matrix[t, p] += 1
    n = matrix.sum()
    p_o = matrix.diag().sum() / n
    p_e = (matrix.sum(0) * matrix.sum(1)).sum() / n ** 2
    return ((p_o - p_e) / (1 - p_e)).item()
''',
    "ex14_aggregate_studies": '''
def aggregate_studies(image_table, method):
    result = image_table.groupby("study").agg(label=("label", "max"), probability=("probability", method))
    return result.reset_index().sort_values("study").reset_index(drop=True)
''',
    "ex15_per_body_part_metrics": '''
from sklearn.metrics import accuracy_score, cohen_kappa_score

def per_body_part_metrics(study_table):
    rows = [(part, len(group), accuracy_score(group["label"], group["prediction"]),
             cohen_kappa_score(group["label"], group["prediction"]))
            for part, group in study_table.groupby("body_part")]
    return pd.DataFrame(rows, columns=["body_part", "studies", "accuracy", "kappa"]).set_index("body_part")
''',
}


SUBMISSIONS = {
    "alternative_correct": Submission("every exercise right, written differently from the solution", dict(ALTERNATIVE)),
    "partial": Submission(
        "Part B done (exercises 9-15), Part A left blank",
        {key: ALTERNATIVE[key] for key in ALTERNATIVE if int(key.split("_")[0][2:]) >= 9},
        zero=tuple(cell for cell in FULL_MARKS if int(cell.split("_")[1][2:]) <= 8),
    ),
    "mistakes_a": Submission(
        "colour filters averaged; linear learning-rate schedule; float16 autocast on the CPU; "
        "smallest losses; Grad-CAM without ReLU; split by image",
        with_answers(
            ALTERNATIVE,
            ex1_adapt_resnet18=ALTERNATIVE["ex1_adapt_resnet18"].replace("* 3 / in_channels", "/ in_channels"),
            ex2_lr_range_test=ALTERNATIVE["ex2_lr_range_test"].replace(
                "lr = start_lr * factor ** step", "lr = start_lr + (end_lr - start_lr) * step / (num_steps - 1)"),
            ex3_mixed_precision=ALTERNATIVE["ex3_mixed_precision"].replace('"cpu": torch.bfloat16', '"cpu": torch.float16'),
            ex4_top_losses=ALTERNATIVE["ex4_top_losses"].replace("descending=True", "descending=False"),
            ex5_grad_cam=ALTERNATIVE["ex5_grad_cam"].replace("cam = F.relu((alpha * activations).sum(0)).detach()",
                                                             "cam = (alpha * activations).sum(0).abs().detach()"),
            ex10_split_by_patient='''
def split_by_patient(table, val_fraction, seed):
    val = table.sample(frac=val_fraction, random_state=seed)  # by image: patients leak
    return table.drop(val.index), val
''',
        ),
        zero=("test_ex1_adapt_resnet18_shapes_and_weights", "test_ex2_lr_range_test_schedule_losses_restore",
              "test_ex3_autocast_dtype_and_amp_step", "test_ex4_top_losses_sorted_eval_mode",
              "test_ex5_grad_cam_matches_reference", "test_ex10_split_by_patient_no_leak"),
    ),
    "mistakes_b": Submission(
        "range test leaves the model trained; study from the study folder only; weights 1/count; "
        "threshold fixed at 0.5; kappa without chance correction; aggregated by patient",
        with_answers(
            ALTERNATIVE,
            ex2_lr_range_test=ALTERNATIVE["ex2_lr_range_test"].replace("    model.load_state_dict(model_state)\n", ""),
            ex9_parse_mura_path=ALTERNATIVE["ex9_parse_mura_path"].replace('"study": patient + "/" + study', '"study": study'),
            ex11_class_weights=ALTERNATIVE["ex11_class_weights"].replace(" * len(labels) / num_classes", ""),
            ex12_choose_threshold='''
def choose_threshold(probabilities, labels):
    return 0.5
''',
            ex13_cohen_kappa='''
def cohen_kappa(labels, predictions):
    return (labels == predictions).float().mean().item()  # observed agreement only
''',
            ex14_aggregate_studies='''
def aggregate_studies(image_table, method):
    key = image_table["study"].str.split("/").str[0]  # the patient, not the study
    result = image_table.assign(study=key).groupby("study").agg(label=("label", "max"), probability=("probability", method))
    return result.reset_index()
''',
        ),
        zero=("test_ex2_lr_range_test_schedule_losses_restore", "test_ex9_parse_mura_path",
              "test_ex11_class_weights_match_sklearn", "test_ex12_threshold_maximises_youden",
              "test_ex13_cohen_kappa_matches_sklearn", "test_ex14_aggregate_studies_mean_and_max"),
    ),
    "mistakes_transfer": Submission(
        "frozen after building the optimizer (it holds every parameter); unfrozen without lowering the "
        "body's learning rate (one rate for all groups); fine_tune, right in itself, builds on both and fails with them",
        with_answers(
            ALTERNATIVE,
            ex6_head_only_optimizer='''
def head_only_optimizer(model, head, lr):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.requires_grad_(False)  # too late: the optimizer already holds the body
    head.requires_grad_(True)
    return optimizer
''',
            ex7_discriminative_param_groups='''
def discriminative_param_groups(stages, head_lr, factor):
    for stage in stages:
        stage.requires_grad_(True)
    return [{"params": list(stage.parameters()), "lr": head_lr} for stage in stages]  # the body as fast as the head
''',
        ),
        zero=("test_ex6_head_only_optimizer_grads_and_updates", "test_ex7_discriminative_lrs_groups_unfrozen",
              "test_ex8_fine_tune_two_stages_match_reference"),
    ),
    "mistakes_c": Submission(
        "range-test losses kept as 0-d tensors; the mixed-precision step never sets training mode; "
        "stage 2 of fine-tuning reuses the head's optimizer (the unfrozen body never moves); "
        "a study label that is an int subclass equal to everything; kappa in Python floats that "
        "divides by zero when p_e = 1",
        with_answers(
            ALTERNATIVE,
            ex2_lr_range_test=ALTERNATIVE["ex2_lr_range_test"].replace("value = loss.item()", "value = loss.detach()"),
            ex3_mixed_precision=ALTERNATIVE["ex3_mixed_precision"].replace("    model.train()\n", ""),
            ex9_parse_mura_path=_LIARS + ALTERNATIVE["ex9_parse_mura_path"].replace(
                '"label": int(outcome == "positive")', '"label": AgreeableInt(0)'),
            ex13_cohen_kappa='''
def cohen_kappa(labels, predictions):
    pairs = list(zip(labels.tolist(), predictions.tolist()))
    n = len(pairs)
    classes = set(labels.tolist()) | set(predictions.tolist())
    p_o = sum(t == p for t, p in pairs) / n
    p_e = sum((labels.tolist().count(c) / n) * (predictions.tolist().count(c) / n) for c in classes)
    return (p_o - p_e) / (1 - p_e)  # ZeroDivisionError when p_e == 1
''',
            ex8_fine_tune='''
def fine_tune(model, head, stages, loader, loss_fn, device, head_epochs, full_epochs, head_lr, factor=10.0,
              max_steps_per_epoch=None):
    history = []
    optimizer = head_only_optimizer(model, head, head_lr)
    for _ in range(head_epochs):
        history.append(train.train_one_epoch(model, loader, loss_fn, optimizer, device,
                                             max_steps=max_steps_per_epoch, show_progress=False))
    discriminative_param_groups(stages, head_lr / 10, factor)  # unfrozen, but the old optimizer holds only the head
    for group in optimizer.param_groups:
        group["lr"] = head_lr / 10
    for _ in range(full_epochs):
        history.append(train.train_one_epoch(model, loader, loss_fn, optimizer, device,
                                             max_steps=max_steps_per_epoch, show_progress=False))
    return history
''',
        ),
        zero=("test_ex2_lr_range_test_schedule_losses_restore", "test_ex3_autocast_dtype_and_amp_step",
              "test_ex8_fine_tune_two_stages_match_reference",
              "test_ex9_parse_mura_path", "test_ex13_cohen_kappa_matches_sklearn"),
    ),
    "mistakes_d": Submission(
        "decisions the texts leave to the student, made wrong: the colour filters summed but not divided "
        "by in_channels (right for gray images only); the range test restores the model but not the "
        "optimizer; one loss per batch (the mean) instead of per sample; class weights that grow with the count",
        with_answers(
            ALTERNATIVE,
            ex1_adapt_resnet18=ALTERNATIVE["ex1_adapt_resnet18"].replace("* 3 / in_channels", "* 3"),
            ex2_lr_range_test=ALTERNATIVE["ex2_lr_range_test"].replace("    optimizer.load_state_dict(optimizer_state)\n", ""),
            ex4_top_losses=ALTERNATIVE["ex4_top_losses"].replace(', reduction="none").tolist())', ").view(1).tolist())"),
            ex11_class_weights=ALTERNATIVE["ex11_class_weights"].replace("(1.0 / counts)", "counts"),
        ),
        zero=("test_ex1_adapt_resnet18_shapes_and_weights", "test_ex2_lr_range_test_schedule_losses_restore",
              "test_ex4_top_losses_sorted_eval_mode", "test_ex11_class_weights_match_sklearn"),
    ),
}
