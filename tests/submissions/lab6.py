"""Fixture submissions for Lab 6 (see lab1.py for how they are used)."""

from tests.submissions.lab1 import Submission, build_notebook, with_answers  # noqa: F401 (build_notebook: used via this module)

#: Points of each autograded test cell of Lab 6.
FULL_MARKS = {
    "test_ex1_pad_batch_mask_and_cut": 1,
    "test_ex2_attention_matches_sdpa_with_mask": 3,
    "test_ex3_multi_head_matches_nn_multiheadattention": 3,
    "test_ex4_sinusoidal_positions_formula": 1,
    "test_ex5_encoder_positions_before_attention_masked_mean": 3,
    "test_ex6_prf_matches_sklearn_zero_division": 1,
    "test_ex7_schedule_warms_up_then_decays": 2,
    "test_ex8_adamw_two_groups_no_decay_on_biases": 2,
    "test_ex9_fine_tune_clips_schedules_steps": 3,
    "test_ex10_one_hot_ambiguity_codes_spread": 2,
    "test_ex11_split_no_duplicates_stratified": 2,
    "test_ex12_splice_cnn_shapes_and_size": 1,
    "test_ex13_mutagenesis_matches_one_at_a_time": 3,
}

#: Written answers, graded by hand: {grade_id: points}.
MANUAL = {"q1_what_gad_model_can_claim": 2.0, "q2_duplicates_inflate_scores": 2.0}

ALTERNATIVE = {
    "ex1_pad_batch": '''
def pad_batch(sequences, pad_id, max_length):
    """F.pad of each cut sequence, the mask from a comparison with the lengths."""
    cut = [torch.tensor(s[:max_length], dtype=torch.long) for s in sequences]
    lengths = torch.tensor([len(s) for s in cut])
    longest = int(lengths.max())
    input_ids = torch.stack([F.pad(s, (0, longest - len(s)), value=pad_id) for s in cut])
    attention_mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    return input_ids, attention_mask
''',
    "ex2_attention": '''
def attention(query, key, value, mask=None):
    """einsum, a large negative number instead of -inf, softmax via exp."""
    d = query.size(-1)
    scores = torch.einsum("bhqd,bhkd->bhqk", query, key) * d ** -0.5
    if mask is not None:
        keep = mask.to(torch.bool).unsqueeze(1).unsqueeze(2)
        scores = torch.where(keep, scores, torch.full_like(scores, torch.finfo(scores.dtype).min))
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return torch.einsum("bhqk,bhkd->bhqd", weights, value), weights
''',
    "ex3_multi_head_attention": '''
class MultiHeadAttention(nn.Module):
    """Heads split with reshape/permute; attention written inline (not with attention())."""
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.h = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x, mask=None):
        b, n, d = x.shape
        split = lambda t: t.reshape(b, n, self.h, d // self.h).permute(0, 2, 1, 3)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(2, 3) / (d // self.h) ** 0.5
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        w = scores.softmax(dim=-1)
        out = (w @ v).permute(0, 2, 1, 3).reshape(b, n, d)
        return self.out_proj(out), w
''',
    "ex4_sinusoidal_positions": '''
def sinusoidal_positions(length, d_model):
    """Two nested loops with math."""
    table = torch.zeros(length, d_model)
    for p in range(length):
        for i in range(0, d_model, 2):
            angle = p / (10000 ** (i / d_model))
            table[p, i] = math.sin(angle)
            table[p, i + 1] = math.cos(angle)
    return table
''',
    "ex5_encoder_classifier": '''
class EncoderClassifier(nn.Module):
    """Same parts; pooling by masked_fill and a division by the counted tokens."""
    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_classes, max_length):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_length, d_model), persistent=False)
        self.attention = MultiHeadAttention(d_model, num_heads)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, input_ids, attention_mask):
        x = self.embedding(input_ids)
        x = x + self.positions[None, : x.size(1), :]
        attended, _ = self.attention(x, attention_mask)
        h = self.norm1(attended + x)
        h = self.norm2(self.feed_forward(h) + h)
        padding = attention_mask == 0
        summed = h.masked_fill(padding[..., None], 0.0).sum(dim=1)
        return self.classifier(summed / (~padding).sum(dim=1, keepdim=True))
''',
    "ex6_precision_recall_f1": '''
def precision_recall_f1(y_true, y_pred):
    """Counts with a zip loop; F1 from the counts."""
    tp = fp = fn = 0
    for t, p in zip([int(v) for v in y_true], [int(v) for v in y_pred]):
        tp += t == 1 and p == 1
        fp += t == 0 and p == 1
        fn += t == 1 and p == 0
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
    return float(precision), float(recall), float(f1)
''',
    "ex7_warmup_then_linear_decay": '''
def warmup_then_linear_decay(step, warmup_steps, total_steps):
    """min of the two lines."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    return float(min(1.0, max(0.0, (total_steps - step) / (total_steps - warmup_steps))))
''',
    "ex8_make_adamw": '''
def make_adamw(model, lr, weight_decay):
    """Groups by name order, filtered by ndim."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for n, p in named if p.ndim == 1], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
''',
    "ex9_fine_tune": '''
def fine_tune(model, batches, optimizer, scheduler, num_epochs, max_grad_norm, max_steps_per_epoch=None):
    """itertools.islice for the step limit; labels passed by name."""
    import itertools
    device = next(model.parameters()).device
    losses = []
    for _ in range(num_epochs):
        for batch in itertools.islice(batches, max_steps_per_epoch):
            model.train()
            model.zero_grad(set_to_none=True)
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                        labels=batch["labels"].to(device))
            out.loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(float(out.loss.detach()))
    return losses
''',
    "ex10_one_hot_dna": '''
IUPAC = {"A": "A", "C": "C", "G": "G", "T": "T", "R": "AG", "Y": "CT", "S": "GC", "W": "AT", "K": "GT", "M": "AC",
         "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG", "N": "ACGT"}


def one_hot_dna(sequence):
    """A (15, 4) lookup table indexed by the letters."""
    letters = sorted(IUPAC)
    table = torch.tensor([[1.0 / len(IUPAC[c]) if b in IUPAC[c] else 0.0 for b in "ACGT"] for c in letters])
    index = torch.tensor([letters.index(c) for c in sequence])
    return table[index].T.contiguous().float()
''',
    "ex11_dedup_stratified_split": '''
def dedup_stratified_split(sequences, labels, test_fraction, seed):
    """With pandas: groups of identical sequences, nunique labels, first index."""
    frame = pd.DataFrame({"sequence": list(sequences), "label": list(labels)})
    consistent = frame.groupby("sequence")["label"].transform("nunique") == 1
    kept = frame[consistent].drop_duplicates("sequence", keep="first")
    train, test = train_test_split(list(kept.index), test_size=test_fraction, stratify=kept["label"].tolist(),
                                   random_state=seed)
    return sorted(map(int, train)), sorted(map(int, test))
''',
    "ex12_splice_cnn": '''
class SpliceCNN(nn.Module):
    """One wide convolution, pooling by 3, a linear layer."""
    def __init__(self, num_classes=3, length=60):
        super().__init__()
        self.conv = nn.Conv1d(4, 48, kernel_size=9, padding=4)
        self.pool = nn.MaxPool1d(3, ceil_mode=True)
        self.out = nn.Linear(48 * -(-length // 3), num_classes)

    def forward(self, x):
        return self.out(self.pool(torch.relu(self.conv(x))).flatten(1))
''',
    "ex13_mutagenesis_matrix": '''
def mutagenesis_matrix(model, one_hot, target):
    """One batch of 4 mutants per position, probabilities with softmax, a loop over positions."""
    model.eval()
    device = next(model.parameters()).device
    rows = []
    with torch.no_grad():
        reference = F.softmax(model(one_hot[None].to(device)), dim=1)[0, target]
        for i in range(one_hot.shape[1]):
            mutants = one_hot.repeat(4, 1, 1)
            mutants[:, :, i] = torch.eye(4)
            rows.append(F.softmax(model(mutants.to(device)), dim=1)[:, target] - reference)
    return torch.stack(rows, dim=1).cpu().to(torch.float32)
''',
}

_PART_A = ("ex1_pad_batch", "ex2_attention", "ex3_multi_head_attention", "ex4_sinusoidal_positions",
           "ex5_encoder_classifier", "ex6_precision_recall_f1")

SUBMISSIONS = {
    "alternative_correct": Submission("every exercise right, written differently from the solution", dict(ALTERNATIVE)),
    "partial": Submission(
        "Part A done (exercises 1-6), Parts B and C left blank",
        {key: ALTERNATIVE[key] for key in _PART_A},
        zero=tuple(cell for cell in FULL_MARKS if int(cell.split("_")[1][2:]) >= 7),
    ),
    "mistakes_a": Submission(
        "padding mask applied after the softmax; positions added after attention; warm-up that never decays; "
        "an ambiguity code as a fifth base; duplicates left across the split",
        with_answers(
            ALTERNATIVE,
            ex2_attention='''
def attention(query, key, value, mask=None):
    weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask[:, None, None, :]  # after the softmax: rows no longer sum to 1
    return weights @ value, weights
''',
            ex5_encoder_classifier=ALTERNATIVE["ex5_encoder_classifier"].replace(
                "        x = x + self.positions[None, : x.size(1), :]\n        attended, _ = self.attention(x, attention_mask)\n"
                "        h = self.norm1(attended + x)\n",
                "        attended, _ = self.attention(x, attention_mask)\n"
                "        h = self.norm1(attended + x + self.positions[None, : x.size(1), :])  # positions after attention\n"),
            ex7_warmup_then_linear_decay='''
def warmup_then_linear_decay(step, warmup_steps, total_steps):
    return float(min(1.0, step / max(1, warmup_steps)))  # warms up, then stays at the peak
''',
            ex10_one_hot_dna='''
def one_hot_dna(sequence):
    encoded = torch.zeros(5, len(sequence))
    for i, letter in enumerate(sequence):
        encoded["ACGTN".index(letter) if letter in "ACGTN" else 4, i] = 1.0  # N (and any code) as a fifth base
    return encoded
''',
            ex11_dedup_stratified_split='''
def dedup_stratified_split(sequences, labels, test_fraction, seed):
    train, test = train_test_split(list(range(len(sequences))), test_size=test_fraction, stratify=list(labels),
                                   random_state=seed)  # no deduplication: copies end up on both sides
    return sorted(train), sorted(test)
''',
        ),
        zero=("test_ex2_attention_matches_sdpa_with_mask", "test_ex5_encoder_positions_before_attention_masked_mean",
              "test_ex7_schedule_warms_up_then_decays", "test_ex10_one_hot_ambiguity_codes_spread",
              "test_ex11_split_no_duplicates_stratified"),
    ),
    "mistakes_b": Submission(
        "attention scaled by d instead of sqrt(d); multi-head output without out_proj; "
        "weight decay on every parameter; no gradient clipping; ambiguity codes as zeros",
        with_answers(
            ALTERNATIVE,
            ex2_attention=ALTERNATIVE["ex2_attention"].replace("* d ** -0.5", "/ d"),
            ex3_multi_head_attention=ALTERNATIVE["ex3_multi_head_attention"].replace(
                "return self.out_proj(out), w", "return out, w  # heads never mixed by out_proj"),
            ex8_make_adamw='''
def make_adamw(model, lr, weight_decay):
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)  # decays biases and norms too
''',
            ex9_fine_tune=ALTERNATIVE["ex9_fine_tune"].replace(
                "            nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)\n", ""),
            ex10_one_hot_dna='''
def one_hot_dna(sequence):
    encoded = torch.zeros(4, len(sequence))
    for i, letter in enumerate(sequence):
        if letter in "ACGT":
            encoded["ACGT".index(letter), i] = 1.0  # ambiguity codes left as zero columns
    return encoded
''',
        ),
        zero=("test_ex2_attention_matches_sdpa_with_mask", "test_ex3_multi_head_matches_nn_multiheadattention",
              "test_ex8_adamw_two_groups_no_decay_on_biases", "test_ex9_fine_tune_clips_schedules_steps",
              "test_ex10_one_hot_ambiguity_codes_spread"),
    ),
    "mistakes_c": Submission(
        "padding always to max_length; mean over padding too; F1 as the mean of precision and recall; scheduler not stepped; "
        "the second copy of a duplicate kept; logits instead of probabilities in mutagenesis",
        with_answers(
            ALTERNATIVE,
            ex1_pad_batch=ALTERNATIVE["ex1_pad_batch"].replace("longest = int(lengths.max())", "longest = max_length"),
            ex5_encoder_classifier=ALTERNATIVE["ex5_encoder_classifier"].replace(
                "        return self.classifier(summed / (~padding).sum(dim=1, keepdim=True))",
                "        return self.classifier(h.mean(dim=1))  # padding counted in the mean"),
            ex6_precision_recall_f1=ALTERNATIVE["ex6_precision_recall_f1"].replace(
                "f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0", "f1 = (precision + recall) / 2"),
            ex9_fine_tune=ALTERNATIVE["ex9_fine_tune"].replace("            scheduler.step()\n", ""),
            ex11_dedup_stratified_split=ALTERNATIVE["ex11_dedup_stratified_split"].replace('keep="first"', 'keep="last"'),
            ex13_mutagenesis_matrix=ALTERNATIVE["ex13_mutagenesis_matrix"].replace(
                "reference = F.softmax(model(one_hot[None].to(device)), dim=1)[0, target]",
                "reference = model(one_hot[None].to(device))[0, target]").replace(
                "rows.append(F.softmax(model(mutants.to(device)), dim=1)[:, target] - reference)",
                "rows.append(model(mutants.to(device))[:, target] - reference)  # logits, not probabilities"),
        ),
        zero=("test_ex1_pad_batch_mask_and_cut", "test_ex5_encoder_positions_before_attention_masked_mean",
              "test_ex6_prf_matches_sklearn_zero_division", "test_ex9_fine_tune_clips_schedules_steps",
              "test_ex11_split_no_duplicates_stratified", "test_ex13_mutagenesis_matches_one_at_a_time"),
    ),
}
