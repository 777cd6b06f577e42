"""Fixture submissions for Lab 3 (see lab1.py for how they are used)."""

from tests.submissions.lab1 import Submission, build_notebook, with_answers  # noqa: F401 (build_notebook: used via this module)

#: Points of each autograded test cell of Lab 3.
FULL_MARKS = {
    "test_ex1_dice_matches_monai_and_empty_masks": 2,
    "test_ex2_iou_matches_sklearn_with_empty": 2,
    "test_ex3_dice_bce_matches_monai": 2,
    "test_ex4_joint_augment_mask_follows_image": 3,
    "test_ex5_conv_block_shape_and_parameters": 1,
    "test_ex6_unet_shapes_parameters_skips": 3,
    "test_ex7_train_step_matches_reference": 2,
    "test_ex8_separate_nuclei_matches_skimage": 2,
    "test_ex9_tta_undoes_flips": 2,
    "test_ex10_monai_unet_configuration": 1,
    "test_ex11_brats_regions_match_monai": 1,
    "test_ex12_volume_ml_with_spacing": 1,
}

#: Written answers, graded by hand: {grade_id: points}.
MANUAL = {"q1_why_dice_not_accuracy": 2.0, "q2_what_uncertainty_can_tell": 2.0}

ALTERNATIVE = {
    "ex1_dice_coefficient": '''
def dice_coefficient(probabilities, targets, smooth=1.0):
    """Flatten each image, then sum."""
    p, t = probabilities.flatten(1), targets.flatten(1)
    return (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
''',
    "ex2_iou_score": '''
def iou_score(probabilities, targets, threshold=0.5):
    """Divide first, then set the empty images to 1."""
    p, t = (probabilities > threshold).flatten(1), (targets > 0.5).flatten(1)
    intersection = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    result = intersection / union
    result[union == 0] = 1.0
    return result.float()
''',
    "ex3_dice_bce_loss": '''
def dice_bce_loss(logits, targets):
    """nn.BCEWithLogitsLoss and a Dice written out again."""
    probabilities = logits.sigmoid()
    bce = nn.BCEWithLogitsLoss()(logits, targets)
    intersection = (probabilities * targets).flatten(1).sum(1)
    dice = (2 * intersection + 1e-5) / (probabilities.flatten(1).sum(1) + targets.flatten(1).sum(1) + 1e-5)
    return bce + 1 - dice.mean()
''',
    "ex4_joint_augment": '''
def joint_augment(image, mask, crop_size, generator):
    """Stack image and mask so that one set of operations moves both; draw everything first."""
    both = torch.cat([image, mask])
    flip_w, flip_h = torch.randint(0, 2, (2,), generator=generator).tolist()
    k = torch.randint(0, 4, (1,), generator=generator).item()
    if flip_w:
        both = both.flip(2)
    if flip_h:
        both = both.flip(1)
    both = both.rot90(k, (1, 2))
    top, left = torch.randint(0, both.shape[1] - crop_size + 1, (2,), generator=generator).tolist()
    both = both[:, top:top + crop_size, left:left + crop_size]
    return both[:-1], both[-1:]
''',
    "ex5_conv_block": '''
class ConvBlock(nn.Module):
    """Named layers and F.relu."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))
''',
    "ex6_unet": '''
class UNet(nn.Module):
    """Blocks built in a loop; skips popped from a stack; upsampled features first in the concatenation."""

    def __init__(self, in_channels, out_channels, features=(16, 32, 64, 128)):
        super().__init__()
        self.downs = nn.ModuleList()
        channels = in_channels
        for f in features:
            self.downs.append(ConvBlock(channels, f))
            channels = f
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for f in reversed(features[:-1]):
            self.ups.append(nn.ConvTranspose2d(channels, f, 2, stride=2))
            self.up_blocks.append(ConvBlock(2 * f, f))
            channels = f
        self.out = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the bottleneck is no skip
        for up, block in zip(self.ups, self.up_blocks):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)
''',
    "ex7_train_step": '''
def train_step(model, images, masks, loss_fn, optimizer):
    """Gradients set to None by hand; the loss read with float()."""
    model.train(True)
    for parameter in model.parameters():
        parameter.grad = None
    loss = loss_fn(model(images), masks)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
''',
    "ex8_separate_nuclei": '''
from skimage import measure, segmentation

def separate_nuclei(mask, min_size):
    """scikit-image: label, blank the small ones, relabel_sequential."""
    labels = measure.label(np.asarray(mask).astype(bool), connectivity=1)
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int64), int(labels.max())
''',
    "ex9_tta_predict": '''
def tta_predict(model, images):
    """Flips are their own inverse; inference_mode; the spread computed by hand."""
    model.eval()
    views = [lambda x: x, lambda x: torch.flip(x, [3]), lambda x: torch.flip(x, [2]), lambda x: torch.flip(x, [2, 3])]
    with torch.inference_mode():
        outputs = torch.stack([view(torch.sigmoid(model(view(images)))) for view in views])
    mean = outputs.mean(0)
    return mean, ((outputs - mean) ** 2).mean(0).sqrt()
''',
    "ex10_make_monai_unet": '''
def make_monai_unet(in_channels, out_channels, features):
    """Positional arguments and lists."""
    return monai.networks.nets.UNet(2, in_channels, out_channels, list(features), [2] * (len(features) - 1), num_res_units=2)
''',
    "ex11_brats_regions": '''
def brats_regions(label_map):
    """torch.isin with the label lists."""
    return torch.stack([torch.isin(label_map, torch.tensor([1, 4])), torch.isin(label_map, torch.tensor([1, 2, 4])),
                        label_map == 4])
''',
    "ex12_volume_ml": '''
def volume_ml(mask, spacing):
    """math.prod and count_nonzero."""
    return math.prod(spacing) * int(torch.count_nonzero(torch.as_tensor(mask))) / 1000
''',
}


SUBMISSIONS = {
    "alternative_correct": Submission("every exercise right, written differently from the solution", dict(ALTERNATIVE)),
    "partial": Submission(
        "exercises 1-6 done (metrics, loss, augmentation, U-Net), 7-12 left blank",
        {key: ALTERNATIVE[key] for key in ALTERNATIVE if int(key.split("_")[0][2:]) <= 6},
        zero=tuple(cell for cell in FULL_MARKS if int(cell.split("_")[1][2:]) >= 7),
    ),
    "mistakes_a": Submission(
        "Dice without the smoothing term (0/0 on empty masks); empty-empty IoU scored 0; Dice loss on the "
        "logits instead of the probabilities; the mask augmented with its own random draw; a skip "
        "connection concatenated on the wrong axis; gradients never cleared",
        with_answers(
            ALTERNATIVE,
            ex1_dice_coefficient='''
def dice_coefficient(probabilities, targets, smooth=1.0):
    p, t = probabilities.flatten(1), targets.flatten(1)
    return 2 * (p * t).sum(1) / (p.sum(1) + t.sum(1))  # no smoothing: 0/0 for empty masks
''',
            ex2_iou_score=ALTERNATIVE["ex2_iou_score"].replace("    result[union == 0] = 1.0\n", "    result[union == 0] = 0.0\n"),
            ex3_dice_bce_loss=ALTERNATIVE["ex3_dice_bce_loss"].replace("probabilities = logits.sigmoid()", "probabilities = logits"),
            ex4_joint_augment='''
def joint_augment(image, mask, crop_size, generator):
    def augment(x):  # called once for the image and once for the mask: different draws
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(-1)
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(-2)
        x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=generator)), dims=(-2, -1))
        top = int(torch.randint(0, x.shape[-2] - crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, x.shape[-1] - crop_size + 1, (1,), generator=generator))
        return x[:, top:top + crop_size, left:left + crop_size]
    return augment(image), augment(mask)
''',
            ex6_unet=ALTERNATIVE["ex6_unet"].replace("torch.cat([up(x), skips.pop()], dim=1)", "torch.cat([up(x), skips.pop()], dim=2)"),
            ex7_train_step=ALTERNATIVE["ex7_train_step"].replace(
                "    for parameter in model.parameters():\n        parameter.grad = None\n", ""),
        ),
        zero=("test_ex1_dice_matches_monai_and_empty_masks", "test_ex2_iou_matches_sklearn_with_empty",
              "test_ex3_dice_bce_matches_monai", "test_ex4_joint_augment_mask_follows_image",
              "test_ex6_unet_shapes_parameters_skips", "test_ex7_train_step_matches_reference"),
    ),
    "mistakes_b": Submission(
        "no ReLU after the second batch norm; 8-connectivity (diagonal nuclei merged); TTA predictions averaged without "
        "undoing the flips; MONAI UNet without residual units; whole tumour without the enhancing label; "
        "volume in cubic millimetres",
        with_answers(
            ALTERNATIVE,
            ex5_conv_block=ALTERNATIVE["ex5_conv_block"].replace("return F.relu(self.bn2(self.conv2(x)))", "return self.bn2(self.conv2(x))"),
            ex8_separate_nuclei=ALTERNATIVE["ex8_separate_nuclei"].replace("connectivity=1", "connectivity=2"),
            ex9_tta_predict=ALTERNATIVE["ex9_tta_predict"].replace(
                "view(torch.sigmoid(model(view(images))))", "torch.sigmoid(model(view(images)))"),
            ex10_make_monai_unet=ALTERNATIVE["ex10_make_monai_unet"].replace(", num_res_units=2)", ")"),
            ex11_brats_regions=ALTERNATIVE["ex11_brats_regions"].replace("torch.tensor([1, 2, 4])", "torch.tensor([1, 2])"),
            ex12_volume_ml=ALTERNATIVE["ex12_volume_ml"].replace(" / 1000", ""),
        ),
        zero=("test_ex5_conv_block_shape_and_parameters", "test_ex8_separate_nuclei_matches_skimage",
              "test_ex9_tta_undoes_flips", "test_ex10_monai_unet_configuration",
              "test_ex11_brats_regions_match_monai", "test_ex12_volume_ml_with_spacing"),
    ),
}
