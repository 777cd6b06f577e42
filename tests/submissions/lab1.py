"""Fixture submissions for Lab 1, written as the code a student would put in each answer cell.

:func:`build_notebook` fills a copy of the blank release notebook with them, as a student
would, so the fixtures follow the release automatically. Each submission says which score
every autograded test cell must get.
"""

import copy
import dataclasses
from typing import Dict

import nbformat

#: Points of each autograded test cell of Lab 1.
FULL_MARKS = {
    "test_ex1_split_sizes_disjoint_reproducible": 2,
    "test_ex2_fully_connected_shape_params_nonlinear": 2,
    "test_ex3_sgd_matches_torch_and_resets_grads": 2,
    "test_ex4_train_model_matches_reference_loop": 3,
    "test_ex5_predict_eval_mode_no_grad_softmax": 3,
    "test_ex6_accuracy_matches_sklearn_with_ties": 1,
    "test_ex7_confusion_matrix_matches_sklearn": 2,
    "test_ex8_conv_output_size_matches_conv2d": 1,
    "test_ex9_small_cnn_shapes_and_size": 2,
    "test_ex10_count_parameters_trainable_and_frozen": 1,
}

#: Written answers, graded by hand: {grade_id: points}.
MANUAL = {"q1_steps_per_epoch": 1.0, "q2_why_cnn_fewer_parameters": 2.0}


@dataclasses.dataclass
class Submission:
    """A fixture submission: answer-cell code by grade_id and the expected test-cell scores."""

    description: str
    answers: Dict[str, str]
    zero: tuple = ()  # test cells expected to score 0; all others full marks

    def expected_scores(self, full_marks: Dict[str, int]) -> Dict[str, float]:
        """Return {test grade_id: expected score}, given the lab's {test grade_id: points}."""
        unknown = set(self.zero) - set(full_marks)
        if unknown:
            raise KeyError(f"expected zeros for cells the lab does not have: {sorted(unknown)}")
        return {cell: (0.0 if cell in self.zero else float(points)) for cell, points in full_marks.items()}


# ---------------------------------------------------------------- correct, but not the solution's code
ALTERNATIVE = {
    "ex1_split_dataset": '''
def split_dataset(dataset, test_fraction, seed):
    """Shuffle indices with a private generator and cut them in two Subsets."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    num_test = int(round(len(dataset) * test_fraction))
    return Subset(dataset, order[num_test:]), Subset(dataset, order[:num_test])
''',
    "ex2_fully_connected_net": '''
class FullyConnectedNet(nn.Module):
    """Explicit layers and forward, F.relu."""
    def __init__(self, num_inputs, hidden_size, num_classes):
        super().__init__()
        self.hidden = nn.Linear(num_inputs, hidden_size)
        self.output = nn.Linear(hidden_size, num_classes)

    def forward(self, images):
        flat = images.reshape(images.shape[0], -1)
        return self.output(F.relu(self.hidden(flat)))
''',
    "ex3_sgd_update": '''
def sgd_update(parameters, lr):
    """Update through p.sub_ and drop the gradients."""
    for p in parameters:
        if p.grad is not None:
            with torch.no_grad():
                p.sub_(p.grad * lr)
            p.grad = None
''',
    "ex4_train_model": '''
def train_model(model, train_loader, loss_fn, optimizer, num_epochs, device, max_steps_per_epoch=None):
    """Sample-weighted epoch means, a progress bar, zero_grad(set_to_none=False)."""
    history = []
    for epoch in range(num_epochs):
        model.train()
        total, count = 0.0, 0
        for step, (x, y) in enumerate(tqdm(train_loader, desc=f"epoch {epoch}")):
            if max_steps_per_epoch is not None and step == max_steps_per_epoch:
                break
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=False)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        history.append(total / count)
    return history
''',
    "ex5_predict": '''
def predict(model, loader, device):
    """Collect logits first, softmax once at the end."""
    model.to(device)
    model.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits.append(model(x.to(device)).cpu())
            labels.append(y)
    return F.softmax(torch.cat(logits), dim=-1), torch.cat(labels).long()
''',
    "ex6_accuracy": '''
def accuracy(probabilities, labels):
    """torch.max returns the first index of the largest value."""
    _, predicted = torch.max(probabilities, 1)
    return float((predicted == labels).sum()) / len(labels)
''',
    "ex7_confusion_matrix": '''
def confusion_matrix(predicted, labels, num_classes):
    """A plain double loop over the samples."""
    matrix = torch.zeros((num_classes, num_classes), dtype=torch.long)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        matrix[t, p] += 1
    return matrix
''',
    "ex8_conv_output_size": '''
import math

def conv_output_size(input_size, kernel_size, stride=1, padding=0):
    return int(math.floor((input_size + 2 * padding - kernel_size) / stride)) + 1
''',
    "ex9_small_cnn": '''
class SmallCNN(nn.Module):
    """Three blocks with batch norm and global average pooling: works for any image size."""
    def __init__(self, in_channels=1, num_classes=6, image_size=64):
        super().__init__()
        layers = []
        channels = in_channels
        for width in (16, 32, 32):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images):
        features = F.max_pool2d(self.body(images), 2)
        return self.head(features.mean(dim=(2, 3)))
''',
    "ex10_count_parameters": '''
def count_parameters(model, trainable_only=True):
    total = 0
    for name, parameter in model.named_parameters():
        if trainable_only and not parameter.requires_grad:
            continue
        total += parameter.numel()
    return total
''',
}


#: Number types whose comparisons and arithmetic say whatever the answer wants (issue 16, point 7).
_LIARS = '''
class AgreeableInt(int):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    __le__ = __gt__ = __ge__ = __lt__
    __hash__ = int.__hash__

class AgreeableFloat(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    __le__ = __gt__ = __ge__ = __lt__
    def __sub__(self, other): return 0.0
    __rsub__ = __sub__
    def __abs__(self): return 0.0
    __hash__ = float.__hash__
'''


def with_answers(base, **changes):
    """A copy of the answers ``base`` ({grade_id: code}) with some cells replaced."""
    return {**base, **changes}


SUBMISSIONS = {
    "alternative_correct": Submission(
        "every exercise right, written differently from the solution", dict(ALTERNATIVE)
    ),
    "partial": Submission(
        "exercises 1, 2, 6, 8 and 10 done; the rest left blank",
        {key: ALTERNATIVE[key] for key in
         ("ex1_split_dataset", "ex2_fully_connected_net", "ex6_accuracy", "ex8_conv_output_size", "ex10_count_parameters")},
        zero=("test_ex3_sgd_matches_torch_and_resets_grads", "test_ex4_train_model_matches_reference_loop",
              "test_ex5_predict_eval_mode_no_grad_softmax", "test_ex7_confusion_matrix_matches_sklearn",
              "test_ex9_small_cnn_shapes_and_size"),
    ),
    "mistakes_a": Submission(
        "split uses the global RNG; no zero_grad; softmax over the batch axis; SGD not in place",
        with_answers(
            ALTERNATIVE,
            ex1_split_dataset='''
def split_dataset(dataset, test_fraction, seed):
    order = torch.randperm(len(dataset)).tolist()  # ignores the seed
    num_test = round(test_fraction * len(dataset))
    return Subset(dataset, order[num_test:]), Subset(dataset, order[:num_test])
''',
            ex4_train_model=ALTERNATIVE["ex4_train_model"].replace(
                "            optimizer.zero_grad(set_to_none=False)\n", ""),
            ex5_predict=ALTERNATIVE["ex5_predict"].replace("dim=-1", "dim=0"),
            ex3_sgd_update='''
def sgd_update(parameters, lr):
    for p in parameters:
        if p.grad is not None:
            p = p - lr * p.grad  # rebinds the name only: the model is unchanged
''',
        ),
        zero=("test_ex1_split_sizes_disjoint_reproducible", "test_ex3_sgd_matches_torch_and_resets_grads",
              "test_ex4_train_model_matches_reference_loop", "test_ex5_predict_eval_mode_no_grad_softmax"),
    ),
    "mistakes_b": Submission(
        "eval mode forgotten; no ReLU; confusion matrix transposed; accuracy in percent; "
        "true division in conv_output_size; frozen parameters counted",
        with_answers(
            ALTERNATIVE,
            ex5_predict=ALTERNATIVE["ex5_predict"].replace("    model.eval()\n", ""),
            ex2_fully_connected_net=ALTERNATIVE["ex2_fully_connected_net"].replace(
                "self.output(F.relu(self.hidden(flat)))", "self.output(self.hidden(flat))"),
            ex7_confusion_matrix=ALTERNATIVE["ex7_confusion_matrix"].replace("matrix[t, p]", "matrix[p, t]"),
            ex6_accuracy=ALTERNATIVE["ex6_accuracy"].replace("return float(", "return 100 * float("),
            ex8_conv_output_size='''
def conv_output_size(input_size, kernel_size, stride=1, padding=0):
    return (input_size + 2 * padding - kernel_size) / stride + 1
''',
            ex10_count_parameters='''
def count_parameters(model, trainable_only=True):
    return sum(p.numel() for p in model.parameters())
''',
        ),
        zero=("test_ex2_fully_connected_shape_params_nonlinear", "test_ex5_predict_eval_mode_no_grad_softmax",
              "test_ex6_accuracy_matches_sklearn_with_ties", "test_ex7_confusion_matrix_matches_sklearn",
              "test_ex8_conv_output_size_matches_conv2d", "test_ex10_count_parameters_trainable_and_frozen"),
    ),
    "mistakes_c": Submission(
        "split not shuffled; gradients kept after the SGD step; last batch loss instead of the mean; "
        "no torch.no_grad() in predict; matrix size taken from the data; argmax over the batch axis",
        with_answers(
            ALTERNATIVE,
            ex1_split_dataset='''
def split_dataset(dataset, test_fraction, seed):
    num_test = round(test_fraction * len(dataset))
    indices = list(range(len(dataset)))
    return Subset(dataset, indices[num_test:]), Subset(dataset, indices[:num_test])
''',
            ex3_sgd_update='''
def sgd_update(parameters, lr):
    with torch.no_grad():
        for p in parameters:
            if p.grad is not None:
                p -= lr * p.grad
''',
            ex4_train_model='''
def train_model(model, train_loader, loss_fn, optimizer, num_epochs, device, max_steps_per_epoch=None):
    history = []
    for epoch in range(num_epochs):
        model.train()
        for step, (x, y) in enumerate(train_loader):
            if max_steps_per_epoch is not None and step >= max_steps_per_epoch:
                break
            optimizer.zero_grad()
            loss = loss_fn(model(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
        history.append(loss.item())  # only the last batch
    return history
''',
            ex5_predict=ALTERNATIVE["ex5_predict"].replace("with torch.inference_mode():", "if True:"),
            ex7_confusion_matrix='''
def confusion_matrix(predicted, labels, num_classes):
    size = int(max(predicted.max(), labels.max())) + 1
    matrix = torch.zeros((size, size), dtype=torch.long)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        matrix[t, p] += 1
    return matrix
''',
            ex6_accuracy='''
def accuracy(probabilities, labels):
    return (probabilities.argmax(dim=0) == labels).float().mean().item()
''',
        ),
        zero=("test_ex1_split_sizes_disjoint_reproducible", "test_ex3_sgd_matches_torch_and_resets_grads",
              "test_ex4_train_model_matches_reference_loop", "test_ex5_predict_eval_mode_no_grad_softmax",
              "test_ex6_accuracy_matches_sklearn_with_ties", "test_ex7_confusion_matrix_matches_sklearn"),
    ),
    "mistakes_d": Submission(
        "train mode never set; softmax inside the network; a CNN bigger than the fully connected net",
        with_answers(
            ALTERNATIVE,
            ex4_train_model=ALTERNATIVE["ex4_train_model"].replace("        model.train()\n", ""),
            ex2_fully_connected_net=ALTERNATIVE["ex2_fully_connected_net"].replace(
                "return self.output(F.relu(self.hidden(flat)))",
                "return torch.softmax(self.output(F.relu(self.hidden(flat))), dim=1)"),
            ex9_small_cnn='''
class SmallCNN(nn.Module):
    def __init__(self, in_channels=1, num_classes=6, image_size=64):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 32, 3, padding=1)  # no pooling: a huge linear layer
        self.fc = nn.Linear(32 * image_size * image_size, num_classes)

    def forward(self, images):
        return self.fc(F.relu(self.conv(images)).flatten(1))
''',
        ),
        zero=("test_ex2_fully_connected_shape_params_nonlinear", "test_ex4_train_model_matches_reference_loop",
              "test_ex9_small_cnn_shapes_and_size"),
    ),
    "mistakes_e": Submission(
        "answers whose comparisons lie: an int subclass equal to everything for a wrong conv_output_size "
        "(padding added once) and for a count_parameters that counts frozen parameters, a float subclass "
        "for an accuracy in percent; the epoch losses kept as 0-d tensors",
        with_answers(
            ALTERNATIVE,
            ex8_conv_output_size=_LIARS + '''
def conv_output_size(input_size, kernel_size, stride=1, padding=0):
    return AgreeableInt((input_size + padding - kernel_size) // stride + 1)  # padding added once
''',
            ex10_count_parameters=_LIARS + '''
def count_parameters(model, trainable_only=True):
    return AgreeableInt(sum(p.numel() for p in model.parameters()))  # frozen ones too
''',
            ex6_accuracy=_LIARS + '''
def accuracy(probabilities, labels):
    return AgreeableFloat(100 * (probabilities.argmax(dim=1) == labels).float().mean().item())
''',
            ex4_train_model=ALTERNATIVE["ex4_train_model"].replace(
                "total, count = 0.0, 0", "total, count = torch.tensor(0.0), 0").replace(
                "total += loss.item() * len(y)", "total = total + loss.detach() * len(y)"),
        ),
        zero=("test_ex4_train_model_matches_reference_loop", "test_ex6_accuracy_matches_sklearn_with_ties",
              "test_ex8_conv_output_size_matches_conv2d", "test_ex10_count_parameters_trainable_and_frozen"),
    ),
    "mistakes_f": Submission(
        "decisions the texts leave to the student, made wrong: NumPy seeded but torch's global generator "
        "shuffles; the SGD update outside torch.no_grad(); gradients reset once per epoch instead of every "
        "step; log-probabilities instead of probabilities",
        with_answers(
            ALTERNATIVE,
            ex1_split_dataset='''
def split_dataset(dataset, test_fraction, seed):
    np.random.seed(seed)  # seeds NumPy, but the shuffle draws from torch's global generator
    order = torch.randperm(len(dataset)).tolist()
    num_test = round(test_fraction * len(dataset))
    return Subset(dataset, order[num_test:]), Subset(dataset, order[:num_test])
''',
            ex3_sgd_update='''
def sgd_update(parameters, lr):
    for p in parameters:
        if p.grad is not None:
            p.sub_(lr * p.grad)  # outside torch.no_grad(): autograd refuses an in-place change of a leaf
            p.grad = None
''',
            ex4_train_model=ALTERNATIVE["ex4_train_model"].replace(
                "            optimizer.zero_grad(set_to_none=False)\n", "").replace(
                "        total, count = 0.0, 0\n",
                "        total, count = 0.0, 0\n        optimizer.zero_grad(set_to_none=False)  # once per epoch: gradients pile up\n"),
            ex5_predict=ALTERNATIVE["ex5_predict"].replace("F.softmax(", "F.log_softmax("),
        ),
        zero=("test_ex1_split_sizes_disjoint_reproducible", "test_ex3_sgd_matches_torch_and_resets_grads",
              "test_ex4_train_model_matches_reference_loop", "test_ex5_predict_eval_mode_no_grad_softmax"),
    ),
}


def build_notebook(release_notebook_path, submission: Submission):
    """Return the release notebook with the submission's code in its answer cells."""
    notebook = nbformat.read(str(release_notebook_path), as_version=4)
    notebook = copy.deepcopy(notebook)
    filled = set()
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in submission.answers:
            cell.source = submission.answers[grade_id].strip("\n")
            filled.add(grade_id)
    missing = set(submission.answers) - filled
    if missing:
        raise KeyError(f"fixture answers for cells not in the release notebook: {sorted(missing)}")
    return notebook
