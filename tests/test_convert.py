"""Checkpoints of the official GLSim and TransFG code load as fgvc models with the official outputs.

The tests build checkpoints in the official formats (key names, containers, DDP prefix, fp16) from small
reference models written here after the official forward passes (arkel23/GLSim ``ViTGLSim`` with
``BlockVanilla``; TACJu/TransFG ``VisionTransformer``), and compare logits and boxes with the converted model.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgvc
from fgvc.cli import main


# ----------------------------------------------------------------------------------- official GLSim (reference)
class OfficialBlock(nn.Module):
    """GLSim's BlockVanilla: pre-norm, separate q/k/v projections, exact GELU MLP (``pwff``)."""

    def __init__(self, dim, heads, ff, eps):
        super().__init__()
        self.attn = nn.Module()
        self.attn.proj_q, self.attn.proj_k, self.attn.proj_v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.pwff = nn.Module()
        self.pwff.fc1, self.pwff.fc2 = nn.Linear(dim, ff), nn.Linear(ff, dim)
        self.heads = heads

    def forward(self, x):
        h = self.norm1(x)
        b, s, d = h.shape
        q, k, v = (p(h).view(b, s, self.heads, -1).transpose(1, 2) for p in
                   (self.attn.proj_q, self.attn.proj_k, self.attn.proj_v))
        scores = (q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])).softmax(-1)
        x = x + self.proj((scores @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.pwff.fc2(F.gelu(self.pwff.fc1(self.norm2(x))))


class OfficialGLSim(nn.Module):
    """ViTGLSim with dynamic_anchor, cos similarity, reducer 'cls', one aggregator block + norm."""

    def __init__(self, dim=192, depth=2, heads=3, patch=8, img=32, classes=5, top=3, eps=1e-12, crop=True):
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embedding = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.positional_embedding = nn.Module()
        self.positional_embedding.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim) * 0.1)
        self.encoder = nn.Module()
        self.encoder.blocks = nn.ModuleList(OfficialBlock(dim, heads, 2 * dim, eps) for _ in range(depth))
        self.encoder_norm = nn.LayerNorm(dim, eps=eps)
        if crop:
            self.aggregator = nn.Module()
            self.aggregator.blocks = nn.ModuleList([OfficialBlock(dim, max(dim // 64, 1), 4 * dim, eps)])
            self.aggregator_norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, classes)
        self.top, self.patch, self.crop = top, patch, crop
        for p in self.parameters():  # non-trivial norms too
            nn.init.normal_(p, std=0.3) if p.dim() > 1 else nn.init.normal_(p, mean=1.0 if p.shape else 0.0, std=0.2)

    def encode(self, x):
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], 1) + self.positional_embedding.pos_embedding
        for block in self.encoder.blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward(self, images):
        x = self.encode(images)
        if not self.crop:
            return self.head(x[:, 0]), None
        g, patches = x[:, :1], x[:, 1:]
        ind = F.cosine_similarity(g, patches, dim=-1).topk(self.top, dim=-1).indices
        side = int(math.sqrt(patches.shape[1]))
        rows, cols = ind // side, ind % side
        pe, size = self.patch, images.shape[-1]
        crops, boxes = [], []
        for i in range(len(images)):  # the official get_crops: first index = rows, end at row_max * P
            x0, y0 = int(rows[i].min()) * pe, int(cols[i].min()) * pe
            x1 = min(max(int(rows[i].max()) * pe, x0 + pe), size)
            y1 = min(max(int(cols[i].max()) * pe, y0 + pe), size)
            crops.append(F.interpolate(images[i:i + 1, :, x0:x1, y0:y1], size=(size, size), mode="bilinear",
                                       align_corners=True))
            boxes.append([y0, x0, y1, x1])  # as fgvc writes boxes: (x0, y0, x1, y1) = (col, row, col, row)
        local = self.encode(torch.cat(crops))
        z = torch.stack([x[:, 0], local[:, 0]], 1)
        z = self.aggregator_norm(self.aggregator.blocks[0](z))
        return self.head(z[:, 0]), torch.tensor(boxes)


def official_glsim_file(path, model, prefix="model.", **config):
    """What glsim/train_utils/trainer.py::save_model writes: torch.save of a dict with the argparse config."""
    args = argparse.Namespace(model_name="vit_b16", image_size=32, dynamic_anchor=True, dynamic_top=model.top,
                              sim_metric=None, aggregator=True, aggregator_norm=True, reducer="cls",
                              classifier="cls", num_classes=5, fp16=False, **config)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(dict(config=args, epoch=3, model=state, accuracy=12.5, optimizer=opt.state_dict()), path)
    return path


@pytest.mark.parametrize("prefix", ["model.", "module.model."])  # single process, DistributedDataParallel
def test_official_glsim_checkpoint_gives_the_official_logits_and_boxes(tmp_path, prefix):
    official = OfficialGLSim().eval()
    path = official_glsim_file(tmp_path / "glsim_best.pth", official, prefix=prefix)
    model = fgvc.load_model(path)  # format detected from the keys
    assert model.method == "glsim" and model.top_k == 3 and model.img_size == (32, 32) and not model.training
    assert model.backbone.vit.norm.eps == 1e-12 and model.aggregator.norm1.eps == 1e-12  # the official eps
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, boxes = official(x)
        out = model(x)
    torch.testing.assert_close(out.logits, logits, atol=3e-5, rtol=0)
    assert torch.equal(out.boxes.cpu(), boxes)


def test_the_official_configs_layer_norm_eps_is_taken_and_plain_vit_runs_convert_to_vit(tmp_path):
    official = OfficialGLSim(dim=32, heads=2, eps=1e-5, crop=False).eval()  # heads: not ViT-T's, so read
    path = official_glsim_file(tmp_path / "vit_last.pth", official, layer_norm_eps=1e-5, num_attention_heads=2)
    model = fgvc.load_model(path, format="glsim-official")
    assert model.method == "vit" and model.backbone.vit.norm.eps == 1e-5 and model.backbone.num_heads == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, official(x)[0], atol=3e-5, rtol=0)


def test_fgvc_convert_writes_an_fgvc_checkpoint_with_the_same_outputs(tmp_path, capsys):
    official = OfficialGLSim().eval()
    path = official_glsim_file(tmp_path / "glsim_best.pth", official)
    out = tmp_path / "glsim.safetensors"
    assert main(["convert", str(path), str(out)]) == 0
    assert "glsim" in capsys.readouterr().out
    model = fgvc.load_model(out)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, official(x)[0], atol=3e-5, rtol=0)
    assert fgvc.read_metadata(out)["norm_eps"] == 1e-12


def test_official_files_are_read_without_running_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save(dict(config=Evil(), model={}), path)
    with pytest.raises(ValueError, match="refusing to load"):
        fgvc.load_model(path)
    torch.save(dict(model={"foo.weight": torch.zeros(1)}), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a checkpoint of a known format"):
        fgvc.load_model(tmp_path / "other.pth")


# --------------------------------------------------------------------------------- official TransFG (reference)
class OfficialTransFGBlock(nn.Module):
    """TransFG's Block: attention_norm / ffn_norm (eps 1e-6), query / key / value / out, ffn.fc1 / fc2."""

    def __init__(self, dim, heads, ff):
        super().__init__()
        self.attention_norm, self.ffn_norm = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.query, self.attn.key, self.attn.value, self.attn.out = (nn.Linear(dim, dim) for _ in range(4))
        self.ffn = nn.Module()
        self.ffn.fc1, self.ffn.fc2 = nn.Linear(dim, ff), nn.Linear(ff, dim)
        self.heads = heads

    def forward(self, x):
        h = self.attention_norm(x)
        b, s, d = h.shape
        q, k, v = (p(h).view(b, s, self.heads, -1).permute(0, 2, 1, 3) for p in
                   (self.attn.query, self.attn.key, self.attn.value))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)).softmax(-1)
        x = x + self.attn.out((weights @ v).permute(0, 2, 1, 3).reshape(b, s, d))
        return x + self.ffn.fc2(F.gelu(self.ffn.fc1(self.ffn_norm(x)))), weights


class OfficialTransFG(nn.Module):
    """TransFG's VisionTransformer: overlapping patches, part selection from the attention product, part layer."""

    def __init__(self, dim=192, depth=3, heads=3, patch=8, stride=6, img=32, classes=4):
        super().__init__()
        n = ((img - patch) // stride + 1) ** 2
        self.transformer = nn.Module()
        self.transformer.embeddings = emb = nn.Module()
        emb.patch_embeddings = nn.Conv2d(3, dim, patch, stride)
        emb.position_embeddings = nn.Parameter(torch.randn(1, n + 1, dim) * 0.1)
        emb.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.transformer.encoder = enc = nn.Module()
        enc.layer = nn.ModuleList(OfficialTransFGBlock(dim, heads, 2 * dim) for _ in range(depth - 1))
        enc.part_layer = OfficialTransFGBlock(dim, heads, 2 * dim)
        enc.part_norm = nn.LayerNorm(dim, eps=1e-6)
        self.part_head = nn.Linear(dim, classes)
        for p in self.parameters():
            nn.init.normal_(p, std=0.3) if p.dim() > 1 else nn.init.normal_(p, mean=1.0, std=0.2)

    def forward(self, x):
        emb, enc = self.transformer.embeddings, self.transformer.encoder
        x = emb.patch_embeddings(x).flatten(2).transpose(-1, -2)
        x = torch.cat([emb.cls_token.expand(len(x), -1, -1), x], 1) + emb.position_embeddings
        maps = []
        for layer in enc.layer:
            x, w = layer(x)
            maps.append(w)
        last = maps[0]
        for w in maps[1:]:
            last = w @ last
        index = last[:, :, 0, 1:].argmax(2) + 1  # (B, heads)
        parts = torch.stack([x[i, index[i]] for i in range(len(x))])
        out, _ = enc.part_layer(torch.cat([x[:, :1], parts], 1))
        return self.part_head(enc.part_norm(out)[:, 0])


@pytest.mark.parametrize("variant", ["plain", "ddp", "fp16"])
def test_official_transfg_checkpoint_gives_the_official_logits(tmp_path, variant):
    from fgvc.methods.transfg import convert_transfg_official
    from fgvc.storage.convert import read_official_checkpoint

    official = OfficialTransFG().eval()
    if variant == "fp16":  # apex O2: the weights themselves are half precision, plus an amp entry
        official.half().float()  # the reference runs the same rounded weights
    state = official.state_dict()
    checkpoint = dict(model={("module." if variant == "ddp" else "") + k: v for k, v in state.items()})
    if variant == "fp16":
        checkpoint["model"] = {k: v.half() for k, v in checkpoint["model"].items()}
        checkpoint["amp"] = {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 17}}
    torch.save(checkpoint, tmp_path / "cub_checkpoint.bin")
    obj = read_official_checkpoint(tmp_path / "cub_checkpoint.bin")
    # no config is stored: a 32 px image with stride-6 patches is not one of the official sizes, so say it
    model = convert_transfg_official(obj, img_size=32, patch_stride=6).eval()
    assert model.method == "transfg" and model.backbone.patch_stride == (6, 6) and model.backbone.depth == 3
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, official(x), atol=3e-5, rtol=0)
    assert next(model.parameters()).dtype == torch.float32


def test_transfg_image_size_and_patch_stride_follow_from_the_position_embeddings(tmp_path):
    from fgvc.methods.transfg import _transfg_geometry

    assert _transfg_geometry(37, 16, None, None) == (448, 12)  # --split overlap --slide_step 12, 448 px
    assert _transfg_geometry(28, 16, None, None) == (448, 16)  # non-overlapping patches, 448 px
    assert _transfg_geometry(18, 16, None, None) == (224, 12)
    assert _transfg_geometry(14, 16, None, None) == (224, 16)
    official = OfficialTransFG(dim=64, heads=1, depth=2, patch=16, stride=16, img=224).eval()
    torch.save({"model": official.state_dict()}, tmp_path / "car_checkpoint.bin")
    model = fgvc.load_model(tmp_path / "car_checkpoint.bin")  # detected: transfg-official, 224 px, stride 16
    assert model.method == "transfg" and model.img_size == (224, 224) and model.backbone.patch_stride == (16, 16)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, official(x), atol=3e-5, rtol=0)


# ------------------------------------------------------------------------------- Google's ViT .npz (the start)
def write_google_npz(path, vit):
    """A timm ViT's weights in the original ViT release's .npz layout (``ViT-B_16.npz``)."""
    import numpy as np

    def a(t):
        return t.detach().numpy()

    d, heads = vit.embed_dim, vit.blocks[0].attn.num_heads
    w = {"embedding/kernel": a(vit.patch_embed.proj.weight.permute(2, 3, 1, 0)),
         "embedding/bias": a(vit.patch_embed.proj.bias), "cls": a(vit.cls_token),
         "Transformer/posembed_input/pos_embedding": a(vit.pos_embed),
         "Transformer/encoder_norm/scale": a(vit.norm.weight), "Transformer/encoder_norm/bias": a(vit.norm.bias)}
    for i, blk in enumerate(vit.blocks):
        p = f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        for name, weight, bias in zip(("query", "key", "value"), blk.attn.qkv.weight.chunk(3),
                                      blk.attn.qkv.bias.chunk(3), strict=True):
            w[f"{mha}{name}/kernel"] = a(weight.T.reshape(d, heads, -1))
            w[f"{mha}{name}/bias"] = a(bias.reshape(heads, -1))
        w[f"{mha}out/kernel"] = a(blk.attn.proj.weight.reshape(d, heads, -1).permute(1, 2, 0))
        w[f"{mha}out/bias"] = a(blk.attn.proj.bias)
        for norm, name in ((blk.norm1, "LayerNorm_0"), (blk.norm2, "LayerNorm_2")):
            w[f"{p}{name}/scale"], w[f"{p}{name}/bias"] = a(norm.weight), a(norm.bias)
        for r, fc in enumerate((blk.mlp.fc1, blk.mlp.fc2)):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"], w[f"{p}MlpBlock_3/Dense_{r}/bias"] = a(fc.weight.T), a(fc.bias)
    np.savez(path, **w)
    return path


def test_checkpoint_path_reads_googles_vit_npz_and_resamples_the_position_embeddings(tmp_path):
    import timm
    from timm.layers import resample_abs_pos_embed

    reference = timm.create_model("test_vit", num_classes=0, img_size=64).eval()  # 4x4 patches of 16 px
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.2)
    npz = write_google_npz(tmp_path / "ViT-test.npz", reference)
    same = fgvc.create_model("vit", num_classes=3, img_size=64, backbone="test_vit", checkpoint_path=npz).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(same.backbone(x).tokens, reference.forward_features(x))
    other = fgvc.create_model("transfg", num_classes=3, img_size=(48, 32), backbone="test_vit", checkpoint_path=npz)
    expected = resample_abs_pos_embed(reference.pos_embed, new_size=(3, 2), num_prefix_tokens=1,
                                      interpolation="bilinear", antialias=False)
    torch.testing.assert_close(other.backbone.vit.pos_embed, expected)
