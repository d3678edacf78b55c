"""Character-level token-type tagging of Python source lines, with a bidirectional PackedLSTM.

    python examples/tag_tokens.py                 # train, then report held-out accuracy
    python examples/tag_tokens.py --compare       # also nn.LSTM + pack_padded_sequence, same steps

The data is real text found on every machine: the lines of Python's own standard library. Each
character is labelled with the type of the token that covers it, from Python's `tokenize` module
(NAME, KEYWORD, OP, NUMBER, STRING, COMMENT, or SPACE). Lines have different lengths, so every
batch is padded, and the loss is a cross-entropy over real characters only.
With --compare, the same steps run from the same initial weights through nn.LSTM with packing;
the two loss curves must agree to float tolerance, and both throughputs are printed.
"""

import argparse
import glob
import io
import keyword
import os
import random
import sysconfig
import time
import tokenize

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from packedrnn import PackedLSTM
from packedrnn.utils import masked_cross_entropy, pad_sequences, sequence_mask

LABELS = ["SPACE", "NAME", "KEYWORD", "OP", "NUMBER", "STRING", "COMMENT"]
STRINGISH = {tokenize.STRING} | {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                                 if hasattr(tokenize, n)}


def token_label(tok) -> int:
    if tok.type == tokenize.NAME:
        return LABELS.index("KEYWORD" if keyword.iskeyword(tok.string) else "NAME")
    if tok.type in STRINGISH:
        return LABELS.index("STRING")
    for name in ("OP", "NUMBER", "COMMENT"):
        if tok.type == getattr(tokenize, name):
            return LABELS.index(name)
    return -1  # NEWLINE, INDENT, ...: the characters stay SPACE


def labelled_lines(path: str, max_len: int):
    """(characters, labels) for each line of one source file that tokenizes cleanly."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        lines = source.split("\n")
        labels = [[0] * len(line) for line in lines]
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            label = token_label(tok)
            if label < 0:
                continue
            (r0, c0), (r1, c1) = tok.start, tok.end
            for r in range(r0, r1 + 1):  # a token may span lines (triple-quoted strings)
                row = labels[r - 1]
                for c in range(c0 if r == r0 else 0, c1 if r == r1 else len(row)):
                    if c < len(row):
                        row[c] = label
    except (SyntaxError, UnicodeDecodeError, tokenize.TokenError, IndentationError, OSError):
        return []
    return [(line, lab) for line, lab in zip(lines, labels) if 1 <= len(line) <= max_len]


def load(max_lines: int, max_len: int, seed: int):
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    data = []
    for path in files:
        data.extend(labelled_lines(path, max_len))
        if len(data) >= max_lines:
            break
    random.Random(seed).shuffle(data)
    data = data[:max_lines]
    encoded = [(torch.tensor([min(ord(ch), 127) for ch in line]), torch.tensor(lab)) for line, lab in data]
    cut = len(encoded) // 10
    return encoded[cut:], encoded[:cut]


class Tagger(nn.Module):
    def __init__(self, packed: bool, hidden: int = 64, embed: int = 32):
        super().__init__()
        self.embed = nn.Embedding(128, embed)
        rnn = PackedLSTM if packed else nn.LSTM
        self.rnn = rnn(embed, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, len(LABELS))
        self.packed = packed

    def forward(self, chars, lengths):
        x = self.embed(chars)
        if self.packed:
            out, _ = self.rnn(x, lengths=lengths)
        else:  # the usual recipe
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=chars.shape[1])
        return self.head(out)


def batches(data, size: int, steps: int, seed: int):
    rng = random.Random(seed)
    for _ in range(steps):
        chosen = rng.sample(data, size)
        chars, lengths = pad_sequences([c for c, _ in chosen])
        labels, _ = pad_sequences([lab for _, lab in chosen])
        yield chars, labels, lengths


def train(model, data, args, desc):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses, chars_seen, t0 = [], 0, time.perf_counter()
    try:
        from tqdm import tqdm
        steps = tqdm(batches(data, args.batch, args.steps, args.seed), total=args.steps, desc=desc)
    except ImportError:
        steps = batches(data, args.batch, args.steps, args.seed)
    for chars, labels, lengths in steps:
        loss = masked_cross_entropy(model(chars, lengths), labels, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        chars_seen += int(lengths.sum())
    return losses, chars_seen / (time.perf_counter() - t0)


@torch.no_grad()
def accuracy(model, data, batch: int = 256) -> float:
    model.eval()
    right = total = 0
    for i in range(0, len(data), batch):
        part = data[i:i + batch]
        chars, lengths = pad_sequences([c for c, _ in part])
        labels, _ = pad_sequences([lab for _, lab in part])
        mask = sequence_mask(lengths, chars.shape[1])
        pred = model(chars, lengths).argmax(-1)
        right += int(((pred == labels) & mask).sum())
        total += int(mask.sum())
    model.train()
    return right / total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lines", type=int, default=20000, help="lines of source to use (10%% held out)")
    p.add_argument("--max-len", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true", help="also train nn.LSTM + pack_padded_sequence")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="float64 makes the two loss curves agree over every step, not just the first")
    args = p.parse_args()

    train_set, test_set = load(args.lines, args.max_len, args.seed)
    print(f"{len(train_set)} training lines, {len(test_set)} held out, labels: {', '.join(LABELS)}")
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    ours = Tagger(packed=True).to(dtype)
    theirs = Tagger(packed=False).to(dtype)
    theirs.load_state_dict(ours.state_dict())  # same parameter names: the same initial weights

    ours_losses, ours_speed = train(ours, train_set, args, "PackedLSTM")
    print(f"PackedLSTM: final loss {ours_losses[-1]:.4f}, held-out accuracy {accuracy(ours, test_set):.4f}, "
          f"{ours_speed:,.0f} characters/s")
    if args.compare:
        theirs_losses, theirs_speed = train(theirs, train_set, args, "nn.LSTM + packing")
        print(f"nn.LSTM + packing: final loss {theirs_losses[-1]:.4f}, held-out accuracy "
              f"{accuracy(theirs, test_set):.4f}, {theirs_speed:,.0f} characters/s")
        print("\nstep   PackedLSTM   nn.LSTM+packing")
        for i in range(0, args.steps, max(1, args.steps // 10)):
            print(f"{i:5d}   {ours_losses[i]:.6f}     {theirs_losses[i]:.6f}")
        gap = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_losses, theirs_losses))
        first = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_losses[:10], theirs_losses[:10]))
        print(f"\nlargest relative loss difference: {first:.1e} over the first 10 steps, {gap:.1e} over all "
              f"{args.steps} steps; speed ratio {ours_speed / theirs_speed:.2f}x")
        if args.dtype == "float32":
            print("(in float32 the two runs round differently, and training amplifies that step after step;"
                  " --dtype float64 keeps them together throughout)")


if __name__ == "__main__":
    main()
