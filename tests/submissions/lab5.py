"""Fixture submissions for Lab 5 (see lab1.py for how they are used)."""

from tests.submissions.lab1 import Submission, build_notebook, with_answers  # noqa: F401 (build_notebook: used via this module)

#: Points of each autograded test cell of Lab 5.
FULL_MARKS = {
    "test_ex1_adjacency_sparse_matches_dense": 1,
    "test_ex2_normalized_adjacency_matches_gcn_norm": 2,
    "test_ex3_gcn_layer_matches_gcnconv": 3,
    "test_ex4_gcn_layers_relu_dropout": 2,
    "test_ex5_masked_accuracy_only_masked_nodes": 1,
    "test_ex6_training_masks_early_stopping_best_weights": 3,
    "test_ex7_smiles_to_graph_atoms_bonds_features": 3,
    "test_ex8_batch_graphs_matches_pyg_batch": 2,
    "test_ex9_mean_pool_matches_global_mean_pool": 1,
    "test_ex10_scaffold_split_no_leak_deepchem_order": 3,
    "test_ex11_ecfp_matches_rdkit": 1,
    "test_ex12_masked_bce_ignores_missing_labels": 2,
}

#: Written answers, graded by hand: {grade_id: points}.
MANUAL = {"q1_over_smoothing": 2.0, "q2_random_split_flatters": 2.0}

ALTERNATIVE = {
    "ex1_adjacency_matrix": '''
def adjacency_matrix(edge_index, num_nodes):
    """Dense first, then to_sparse()."""
    dense = torch.zeros(num_nodes, num_nodes)
    dense[edge_index[0], edge_index[1]] = 1.0
    return dense.to_sparse()
''',
    "ex2_normalized_adjacency": '''
def normalized_adjacency(edge_index, num_nodes):
    """Through a dense matrix and rsqrt."""
    a = torch.eye(num_nodes)
    a[edge_index[0], edge_index[1]] = 1.0
    scale = a.sum(dim=1).rsqrt()
    return (scale[:, None] * a * scale[None, :]).to_sparse()
''',
    "ex3_gcn_layer": '''
class GCNLayer(nn.Module):
    """Propagate first, then transform: (A X) W^T equals A (X W^T)."""
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x, adjacency):
        return self.linear(adjacency @ x) + self.bias
''',
    "ex4_gcn": '''
class GCN(nn.Module):
    """nn.Dropout modules and one expression."""
    def __init__(self, in_features, hidden_features, num_classes, dropout=0.5):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.layer1 = GCNLayer(in_features, hidden_features)
        self.layer2 = GCNLayer(hidden_features, num_classes)

    def forward(self, x, adjacency):
        return self.layer2(self.drop(torch.relu(self.layer1(self.drop(x), adjacency))), adjacency)
''',
    "ex5_masked_accuracy": '''
def masked_accuracy(logits, labels, mask):
    correct = (logits.argmax(dim=-1) == labels) & mask
    return correct.sum().item() / mask.sum().item()
''',
    "ex6_train_node_classifier": '''
def train_node_classifier(model, inputs, labels, train_mask, val_mask, optimizer, max_epochs, patience):
    """A while loop; the best weights kept as cloned tensors."""
    losses, accuracies = [], []
    best_epoch, best_weights = None, None
    epoch = 0
    while epoch < max_epochs:
        model.train()
        optimizer.zero_grad()
        out = model(*inputs)
        loss = F.cross_entropy(out[train_mask], labels[train_mask])
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = masked_accuracy(model(*inputs), labels, val_mask)
        losses.append(float(loss))
        accuracies.append(accuracy)
        if best_epoch is None or accuracy > accuracies[best_epoch]:
            best_epoch = epoch
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if epoch - best_epoch >= patience:
            break
        epoch += 1
    model.load_state_dict(best_weights)
    return {"train_loss": losses, "val_accuracy": accuracies, "best_epoch": best_epoch}
''',
    "ex7_smiles_to_graph": '''
ATOM_TYPES = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)


def atom_features(atom):
    symbol = atom.GetSymbol()
    one_hot = [0.0] * (len(ATOM_TYPES) + 1)
    one_hot[ATOM_TYPES.index(symbol) if symbol in ATOM_TYPES else len(ATOM_TYPES)] = 1.0
    return one_hot + [atom.GetDegree(), atom.GetTotalNumHs(), atom.GetFormalCharge(),
                      int(atom.GetIsAromatic()), int(atom.IsInRing())]


def smiles_to_graph(smiles):
    """Index lists and F.one_hot for the bond types."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError("not a valid SMILES: " + smiles)
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float32)
    sources, targets, kinds = [], [], []
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        kind = BOND_TYPES.index(bond.GetBondType())
        sources += [a, b]
        targets += [b, a]
        kinds += [kind, kind]
    edge_index = torch.tensor([sources, targets], dtype=torch.long)
    edge_attr = F.one_hot(torch.tensor(kinds, dtype=torch.long), num_classes=4).float()
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr)
''',
    "ex8_batch_graphs": '''
def batch_graphs(graphs):
    """Offsets from a cumulative sum, the batch vector from repeat_interleave."""
    sizes = torch.tensor([g.num_nodes for g in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes
    x = torch.cat([g.x for g in graphs])
    edge_index = torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets)], dim=1)
    edge_attr = torch.cat([g.edge_attr for g in graphs])
    batch = torch.repeat_interleave(torch.arange(len(graphs)), sizes)
    return x, edge_index, edge_attr, batch
''',
    "ex9_mean_pool": '''
def mean_pool(node_features, batch, num_graphs):
    """A (G, N) membership matrix times the features."""
    membership = F.one_hot(batch, num_graphs).to(node_features.dtype).t()
    counts = membership.sum(dim=1, keepdim=True)
    return membership @ node_features / counts.clamp(min=1)
''',
    "ex10_scaffold_split": '''
from collections import defaultdict


def scaffold_split(smiles_list, fractions=(0.8, 0.1, 0.1)):
    """defaultdict of groups, sorted by negated keys."""
    by_scaffold = defaultdict(list)
    for i, s in enumerate(smiles_list):
        by_scaffold[MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=False)].append(i)
    groups = sorted(by_scaffold.values(), key=lambda g: (-len(g), -g[0]))
    n = len(smiles_list)
    parts = ([], [], [])
    for g in groups:
        if len(parts[0]) + len(g) <= fractions[0] * n:
            parts[0].extend(g)
        elif len(parts[0]) + len(parts[1]) + len(g) <= (fractions[0] + fractions[1]) * n:
            parts[1].extend(g)
        else:
            parts[2].extend(g)
    return tuple(sorted(p) for p in parts)
''',
    "ex11_ecfp": '''
from rdkit import DataStructs


def ecfp(smiles_list, radius=2, n_bits=2048):
    """Bit vectors converted with DataStructs."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    rows = []
    for s in smiles_list:
        row = np.zeros((n_bits,), dtype=np.uint8)
        DataStructs.ConvertToNumpyArray(generator.GetFingerprint(Chem.MolFromSmiles(s)), row)
        rows.append(row)
    return np.array(rows, dtype=np.uint8)
''',
    "ex12_masked_bce_loss": '''
def masked_bce_loss(logits, labels):
    """Per-entry losses weighted by a presence mask."""
    present = ~torch.isnan(labels)
    safe = torch.where(present, labels, torch.zeros_like(labels))
    losses = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
    return (losses * present).sum() / present.sum()
''',
}

_PART_A = ("ex1_adjacency_matrix", "ex2_normalized_adjacency", "ex3_gcn_layer", "ex4_gcn", "ex5_masked_accuracy",
           "ex6_train_node_classifier")

SUBMISSIONS = {
    "alternative_correct": Submission("every exercise right, written differently from the solution", dict(ALTERNATIVE)),
    "partial": Submission(
        "Part A done (exercises 1-6), Part B (molecules) left blank",
        {key: ALTERNATIVE[key] for key in _PART_A},
        zero=tuple(cell for cell in FULL_MARKS if int(cell.split("_")[1][2:]) >= 7),
    ),
    "mistakes_a": Submission(
        "normalised without self-loops; accuracy over all nodes instead of the mask; hydrogens added as atoms; "
        "edge indices not offset when batching; missing labels treated as negatives",
        with_answers(
            ALTERNATIVE,
            ex2_normalized_adjacency=ALTERNATIVE["ex2_normalized_adjacency"].replace(
                "a = torch.eye(num_nodes)", "a = torch.zeros(num_nodes, num_nodes)"),
            ex5_masked_accuracy='''
def masked_accuracy(logits, labels, mask):
    return (logits.argmax(dim=1) == labels).float().mean().item()  # every node, not the mask's
''',
            ex7_smiles_to_graph=ALTERNATIVE["ex7_smiles_to_graph"].replace(
                "mol = Chem.MolFromSmiles(smiles)\n    if mol is None:\n        raise ValueError(\"not a valid SMILES: \" + smiles)",
                "mol = Chem.MolFromSmiles(smiles)\n    if mol is None:\n        raise ValueError(\"not a valid SMILES: \" + smiles)\n"
                "    mol = Chem.AddHs(mol)"),
            ex8_batch_graphs=ALTERNATIVE["ex8_batch_graphs"].replace("g.edge_index + int(o)", "g.edge_index"),
            ex12_masked_bce_loss='''
def masked_bce_loss(logits, labels):
    return F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels, nan=0.0))  # missing = negative
''',
        ),
        zero=("test_ex2_normalized_adjacency_matches_gcn_norm", "test_ex5_masked_accuracy_only_masked_nodes",
              "test_ex7_smiles_to_graph_atoms_bonds_features", "test_ex8_batch_graphs_matches_pyg_batch",
              "test_ex12_masked_bce_ignores_missing_labels"),
    ),
    "mistakes_b": Submission(
        "D^-1 (A + I) instead of D^-1/2 (A + I) D^-1/2; no ReLU between the GCN layers; loss over all nodes; "
        "scaffold groups cut at the fraction (a scaffold in two parts); radius ignored in ecfp",
        with_answers(
            ALTERNATIVE,
            ex2_normalized_adjacency='''
def normalized_adjacency(edge_index, num_nodes):
    a = torch.eye(num_nodes)
    a[edge_index[0], edge_index[1]] = 1.0
    return (a / a.sum(dim=1, keepdim=True)).to_sparse()  # row-normalised: D^-1 (A + I)
''',
            ex4_gcn=ALTERNATIVE["ex4_gcn"].replace("self.drop(torch.relu(self.layer1(", "self.drop((self.layer1("),
            ex6_train_node_classifier=ALTERNATIVE["ex6_train_node_classifier"].replace(
                "F.cross_entropy(out[train_mask], labels[train_mask])", "F.cross_entropy(out, labels)"),
            ex10_scaffold_split='''
def scaffold_split(smiles_list, fractions=(0.8, 0.1, 0.1)):
    groups = {}
    for i, s in enumerate(smiles_list):
        groups.setdefault(MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=False), []).append(i)
    order = [i for g in sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True) for i in g]
    n_train, n_val = round(fractions[0] * len(order)), round(fractions[1] * len(order))
    # molecule by molecule: a scaffold group may be cut in two
    return sorted(order[:n_train]), sorted(order[n_train:n_train + n_val]), sorted(order[n_train + n_val:])
''',
            ex11_ecfp=ALTERNATIVE["ex11_ecfp"].replace("GetMorganGenerator(radius=radius,", "GetMorganGenerator(radius=2,"),
        ),
        zero=("test_ex2_normalized_adjacency_matches_gcn_norm", "test_ex4_gcn_layers_relu_dropout",
              "test_ex6_training_masks_early_stopping_best_weights", "test_ex10_scaffold_split_no_leak_deepchem_order",
              "test_ex11_ecfp_matches_rdkit"),
    ),
    "mistakes_c": Submission(
        "a dense adjacency matrix; a GCN layer without propagation; best weights not restored; each bond as one edge; "
        "sum pooling instead of mean; the loss divided by all entries",
        with_answers(
            ALTERNATIVE,
            ex1_adjacency_matrix=ALTERNATIVE["ex1_adjacency_matrix"].replace("return dense.to_sparse()", "return dense"),
            ex3_gcn_layer=ALTERNATIVE["ex3_gcn_layer"].replace("self.linear(adjacency @ x)", "self.linear(x)"),
            ex6_train_node_classifier=ALTERNATIVE["ex6_train_node_classifier"].replace(
                "    model.load_state_dict(best_weights)\n", ""),
            ex7_smiles_to_graph=ALTERNATIVE["ex7_smiles_to_graph"].replace(
                "        sources += [a, b]\n        targets += [b, a]\n        kinds += [kind, kind]",
                "        sources += [a]\n        targets += [b]\n        kinds += [kind]"),
            ex9_mean_pool=ALTERNATIVE["ex9_mean_pool"].replace(" / counts.clamp(min=1)", ""),
            ex12_masked_bce_loss=ALTERNATIVE["ex12_masked_bce_loss"].replace(
                "return (losses * present).sum() / present.sum()", "return (losses * present).mean()"),
        ),
        zero=("test_ex1_adjacency_sparse_matches_dense", "test_ex3_gcn_layer_matches_gcnconv",
              "test_ex6_training_masks_early_stopping_best_weights", "test_ex7_smiles_to_graph_atoms_bonds_features",
              "test_ex9_mean_pool_matches_global_mean_pool", "test_ex12_masked_bce_ignores_missing_labels"),
    ),
}
