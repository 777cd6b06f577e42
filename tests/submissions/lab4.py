"""Fixture submissions for Lab 4 (see lab1.py for how they are used)."""

from tests.submissions.lab1 import Submission, build_notebook, with_answers  # noqa: F401 (build_notebook: used via this module)

#: Points of each autograded test cell of Lab 4.
FULL_MARKS = {
    "test_ex1_smiles_to_image_rdkit_inverted": 2,
    "test_ex2_morgan_fingerprints_match_rdkit": 2,
    "test_ex3_tanimoto_matches_rdkit": 2,
    "test_ex4_scaffold_split_no_shared_scaffold": 2,
    "test_ex5_balanced_weights_match_sklearn": 1,
    "test_ex6_mcc_matches_sklearn": 2,
    "test_ex7_roc_auc_matches_sklearn_with_ties": 2,
    "test_ex8_repeated_splits_match_reference": 2,
    "test_ex9_hook_collects_and_removes_itself": 2,
    "test_ex10_fusion_scaled_on_training_rows": 2,
    "test_ex11_background_heat_after_resizing": 2,
}

#: Written answers, graded by hand: {grade_id: points}.
MANUAL = {"q1_why_mcc_not_accuracy": 2.0, "q2_what_gradcam_says": 2.0}

ALTERNATIVE = {
    "ex1_smiles_to_image": '''
def smiles_to_image(smiles, size):
    """Through a NumPy array in float64, cast at the end."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError("cannot parse " + smiles)
    grey = np.array(Draw.MolToImage(mol, size=(size, size)).convert("L"))
    return torch.tensor(1.0 - grey / 255.0, dtype=torch.float32)[None]
''',
    "ex2_morgan_fingerprints": '''
def morgan_fingerprints(smiles_list, radius=2, n_bits=1024):
    """Bit vectors converted with DataStructs.ConvertToNumpyArray."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    matrix = np.zeros((len(smiles_list), n_bits), dtype=np.uint8)
    for row, smiles in enumerate(smiles_list):
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"bad SMILES {smiles}")
        bits = np.zeros(n_bits)
        DataStructs.ConvertToNumpyArray(generator.GetFingerprint(mol), bits)
        matrix[row] = bits
    return matrix
''',
    "ex3_tanimoto_similarity": '''
def tanimoto_similarity(a, b):
    """Broadcast AND and OR over all pairs."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    both = (a[:, None, :] & b[None, :, :]).sum(axis=-1)
    either = (a[:, None, :] | b[None, :, :]).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(either == 0, 0.0, both / either).astype(np.float64)
''',
    "ex4_scaffold_split": '''
from collections import defaultdict

def scaffold_split(smiles_list, test_fraction):
    """Groups as a defaultdict, sorted (size, scaffold) items."""
    groups = defaultdict(list)
    for i, s in enumerate(smiles_list):
        groups[MurckoScaffold.MurckoScaffoldSmiles(smiles=s)].append(i)
    limit = round((1 - test_fraction) * len(smiles_list))
    train, test = [], []
    for scaffold, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        if len(train) + len(members) <= limit:
            train.extend(members)
        else:
            test.extend(members)
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))
''',
    "ex5_balanced_sample_weights": '''
from collections import Counter

def balanced_sample_weights(labels):
    counts = Counter(np.asarray(labels).tolist())
    n, k = len(labels), len(counts)
    return np.array([n / (k * counts[label]) for label in np.asarray(labels).tolist()])
''',
    "ex6_mcc": '''
def mcc(labels, predictions):
    """Counts as Python ints, math.sqrt."""
    pairs = list(zip(np.asarray(labels).tolist(), np.asarray(predictions).tolist()))
    tp = sum(1 for t, p in pairs if t == 1 and p == 1)
    tn = sum(1 for t, p in pairs if t == 0 and p == 0)
    fp = sum(1 for t, p in pairs if t == 0 and p == 1)
    fn = sum(1 for t, p in pairs if t == 1 and p == 0)
    product = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if product == 0:
        return 0.0
    return (tp * tn - fp * fn) / math.sqrt(product)
''',
    "ex7_roc_auc": '''
def roc_auc(labels, scores):
    """A plain double loop over (active, decoy) pairs."""
    actives = [s for s, t in zip(scores, labels) if t == 1]
    decoys = [s for s, t in zip(scores, labels) if t == 0]
    if not actives or not decoys:
        raise ValueError("need both classes")
    total = 0.0
    for a in actives:
        for d in decoys:
            total += 1.0 if a > d else (0.5 if a == d else 0.0)
    return total / (len(actives) * len(decoys))
''',
    "ex8_repeated_split_scores": '''
def repeated_split_scores(features, labels, num_repeats, test_fraction, seed, metric):
    """Split the arrays themselves; a list comprehension."""
    def one(r):
        x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=test_fraction,
                                                            stratify=labels, random_state=seed + r)
        return metric(y_test, LogisticRegression(max_iter=1000).fit(x_train, y_train).predict(x_test))
    return np.array([one(r) for r in range(num_repeats)], dtype=float)
''',
    "ex9_collect_activations": '''
def collect_activations(model, layer, loader, device):
    """inference_mode, model.train(False), outputs reshaped."""
    outputs = []
    handle = layer.register_forward_hook(lambda module, args, out: outputs.append(out.reshape(len(out), -1).cpu()))
    model.train(False)
    try:
        with torch.inference_mode():
            for batch in loader:
                model(batch[0].to(device))
    finally:
        handle.remove()
    return torch.cat(outputs).float()
''',
    "ex10_fuse_features": '''
def fuse_features(train_parts, test_parts):
    """Standardise by hand: mean and population SD of the training rows (SD 0 -> 1)."""
    train = np.hstack([np.asarray(p, dtype=float) for p in train_parts])
    test = np.hstack([np.asarray(p, dtype=float) for p in test_parts])
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sd[sd == 0] = 1.0
    return (train - mean) / sd, (test - mean) / sd
''',
    "ex11_background_heat_fraction": '''
def background_heat_fraction(cam, image, ink_threshold=0.05):
    size = tuple(image.shape[1:])
    heat = F.interpolate(cam.reshape(1, 1, *cam.shape).float(), size=size, mode="bilinear", align_corners=False).squeeze()
    total = float(heat.sum())
    if total == 0:
        return 0.0
    mask = (image[0] <= ink_threshold).float()
    return float((heat * mask).sum()) / total
''',
}


SUBMISSIONS = {
    "alternative_correct": Submission("every exercise right, written differently from the solution", dict(ALTERNATIVE)),
    "partial": Submission(
        "exercises 1-5 done (drawing, fingerprints, Tanimoto, split, weights), the rest left blank",
        {key: ALTERNATIVE[key] for key in ALTERNATIVE if int(key.split("_")[0][2:]) <= 5},
        zero=tuple(cell for cell in FULL_MARKS if int(cell.split("_")[1][2:]) >= 6),
    ),
    "mistakes_a": Submission(
        "image not inverted; random split instead of scaffolds; MCC that ignores true negatives; "
        "a hook that is never removed; fusion without scaling",
        with_answers(
            ALTERNATIVE,
            ex1_smiles_to_image=ALTERNATIVE["ex1_smiles_to_image"].replace("1.0 - grey / 255.0", "grey / 255.0"),
            ex4_scaffold_split='''
def scaffold_split(smiles_list, test_fraction):
    train, test = train_test_split(np.arange(len(smiles_list)), test_size=test_fraction, random_state=0)
    return np.sort(train), np.sort(test)
''',
            ex6_mcc='''
def mcc(labels, predictions):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    tp = np.sum((labels == 1) & (predictions == 1))
    fp = np.sum((labels == 0) & (predictions == 1))
    fn = np.sum((labels == 1) & (predictions == 0))
    denominator = math.sqrt((tp + fp) * (tp + fn))  # true negatives ignored
    return float(tp / denominator) if denominator > 0 else 0.0
''',
            ex9_collect_activations='''
def collect_activations(model, layer, loader, device):
    outputs = []
    layer.register_forward_hook(lambda module, args, out: outputs.append(out.flatten(1).cpu()))  # never removed
    model.eval()
    with torch.no_grad():
        for images, _ in loader:
            model(images.to(device))
    return torch.cat(outputs)
''',
            ex10_fuse_features='''
def fuse_features(train_parts, test_parts):
    return np.hstack(train_parts).astype(float), np.hstack(test_parts).astype(float)  # no scaling
''',
        ),
        zero=("test_ex1_smiles_to_image_rdkit_inverted", "test_ex4_scaffold_split_no_shared_scaffold",
              "test_ex6_mcc_matches_sklearn", "test_ex9_hook_collects_and_removes_itself",
              "test_ex10_fusion_scaled_on_training_rows"),
    ),
    "mistakes_b": Submission(
        "fingerprint length left at RDKit's default; weights 1/count; ties ignored in ROC AUC; "
        "the same split in every repeat; scaler fitted on training and test rows (a leak); map resized by nearest pixel",
        with_answers(
            ALTERNATIVE,
            ex2_morgan_fingerprints=ALTERNATIVE["ex2_morgan_fingerprints"].replace(
                "GetMorganGenerator(radius=radius, fpSize=n_bits)", "GetMorganGenerator(radius=radius)").replace(
                "bits = np.zeros(n_bits)", "bits = np.zeros(2048)").replace(
                "matrix = np.zeros((len(smiles_list), n_bits)", "matrix = np.zeros((len(smiles_list), 2048)"),
            ex5_balanced_sample_weights='''
def balanced_sample_weights(labels):
    values, counts = np.unique(labels, return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist()))
    return np.array([1.0 / lookup[label] for label in np.asarray(labels).tolist()])
''',
            ex7_roc_auc=ALTERNATIVE["ex7_roc_auc"].replace("(0.5 if a == d else 0.0)", "0.0"),
            ex8_repeated_split_scores=ALTERNATIVE["ex8_repeated_split_scores"].replace("random_state=seed + r", "random_state=seed"),
            ex10_fuse_features='''
def fuse_features(train_parts, test_parts):
    train = np.hstack([np.asarray(p, dtype=float) for p in train_parts])
    test = np.hstack([np.asarray(p, dtype=float) for p in test_parts])
    scaler = StandardScaler().fit(np.vstack([train, test]))  # test rows leak into the scaling
    return scaler.transform(train), scaler.transform(test)
''',
            ex11_background_heat_fraction=ALTERNATIVE["ex11_background_heat_fraction"].replace(
                'mode="bilinear", align_corners=False', 'mode="nearest"'),
        ),
        zero=("test_ex2_morgan_fingerprints_match_rdkit", "test_ex5_balanced_weights_match_sklearn",
              "test_ex7_roc_auc_matches_sklearn_with_ties", "test_ex8_repeated_splits_match_reference",
              "test_ex10_fusion_scaled_on_training_rows", "test_ex11_background_heat_after_resizing"),
    ),
    "mistakes_c": Submission(
        "colour drawing averaged over R, G, B instead of convert('L'); empty fingerprints give NaN; scaffold ties in order of appearance; "
        "MCC's 0/0 not defined; hook left behind when the loader fails",
        with_answers(
            ALTERNATIVE,
            ex1_smiles_to_image=ALTERNATIVE["ex1_smiles_to_image"].replace(
                'np.array(Draw.MolToImage(mol, size=(size, size)).convert("L"))',
                'np.array(Draw.MolToImage(mol, size=(size, size))).mean(axis=2)'),
            ex3_tanimoto_similarity=ALTERNATIVE["ex3_tanimoto_similarity"].replace(
                "np.where(either == 0, 0.0, both / either)", "(both / either)"),
            ex4_scaffold_split=ALTERNATIVE["ex4_scaffold_split"].replace(
                "key=lambda item: (-len(item[1]), item[0])", "key=lambda item: -len(item[1])"),
            ex6_mcc=ALTERNATIVE["ex6_mcc"].replace("    if product == 0:\n        return 0.0\n", ""),
            ex9_collect_activations='''
def collect_activations(model, layer, loader, device):
    outputs = []
    handle = layer.register_forward_hook(lambda module, args, out: outputs.append(out.flatten(1).cpu()))
    model.eval()
    with torch.no_grad():
        for images, _ in loader:
            model(images.to(device))
    handle.remove()  # not reached when the loop fails
    return torch.cat(outputs)
''',
        ),
        zero=("test_ex1_smiles_to_image_rdkit_inverted", "test_ex3_tanimoto_matches_rdkit",
              "test_ex4_scaffold_split_no_shared_scaffold", "test_ex6_mcc_matches_sklearn",
              "test_ex9_hook_collects_and_removes_itself"),
    ),
}
