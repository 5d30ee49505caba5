"""The data sets of Part II, all local: sklearn's bundled digits, a text that
ships with Python, a synthetic padding task."""
import torch


def _permutation(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def split(tensor, test_fraction, seed):
    """Shuffle the rows of `tensor` with `seed` and split them -> (train,
    test)."""
    order = _permutation(len(tensor), seed)
    n_test = int(round(len(tensor) * test_fraction))
    return tensor[order[n_test:]], tensor[order[:n_test]]


def digits(seed=0, test_fraction=0.25):
    """sklearn's 8x8 digits -> (x_train, y_train, x_test, y_test); x is
    float32 (N, 1, 8, 8), standardized with train stats."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    # N, 1, 8, 8 in [0, 1]
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)               # N
    order = _permutation(len(x), seed)
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    # one scalar each: some pixels are always 0
    mean, std = x[train].mean(), x[train].std()
    return (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test]


def text_corpus():
    """A real English text shipped with Python: the pydoc_data help topics,
    joined in sorted key order (~465k chars)."""
    from pydoc_data.topics import topics
    return "".join(topics[key] for key in sorted(topics))


def char_vocab(text):
    """The characters of `text` -> (stoi dict char -> id, itos list id ->
    char), sorted."""
    itos = sorted(set(text))
    return {ch: i for i, ch in enumerate(itos)}, itos


def char_lm_windows(text, block_size, stoi):
    """Windows of block_size + 1 characters at a stride of block_size ->
    LongTensor (num_windows, block_size + 1).

    Window i holds text[i*block_size : (i+1)*block_size + 1], so neighbours
    share one character and no character is a target twice: inputs are
    w[:, :-1], targets w[:, 1:].
    """
    ids = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    num_windows = (len(ids) - 1) // block_size
    starts = torch.arange(num_windows) * block_size
    # num_windows, block_size + 1
    return ids[starts[:, None] + torch.arange(block_size + 1)]


def padded_sequences(n, min_len, max_len, vocab_size=16, seed=0, pad_id=0):
    """A variable-length task whose label needs the whole sequence.

    Real tokens are every id but pad_id, split into a lower and an upper half.
    Each sequence leans to one half (3 of 4 tokens from it, on average), and
    its label is 1 if strictly more of its tokens are in the upper half than
    in the lower, else 0.  Returns dict(tokens (n, max_len) long, pad_id after
    each length; pad_mask (n, max_len) bool, True = pad; lengths (n,); labels
    (n,) long).
    """
    if not 1 <= min_len <= max_len:
        raise ValueError("need 1 <= min_len <= max_len, got "
                         f"min_len={min_len}, max_len={max_len}")
    g = torch.Generator().manual_seed(seed)
    real = torch.tensor([t for t in range(vocab_size) if t != pad_id])
    half = len(real) // 2
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)   # n
    lean_up = torch.rand(n, 1, generator=g) < 0.5                  # n, 1
    # n, max_len
    upper = (torch.rand(n, max_len, generator=g) < 0.75) == lean_up
    offset = torch.where(upper, half, 0)
    width = torch.where(upper, len(real) - half, half)
    # into `real`
    index = offset + (torch.rand(n, max_len, generator=g) * width).long()
    pad_mask = torch.arange(max_len) >= lengths[:, None]   # n, max_len
    tokens = torch.where(pad_mask, pad_id, real[index])
    n_upper = (upper & ~pad_mask).sum(1)
    labels = (2 * n_upper > lengths).long()        # strict majority upper
    return dict(tokens=tokens, pad_mask=pad_mask, lengths=lengths,
                labels=labels)


def random_batches(n, batch_size, seed):
    """One shuffled epoch: a list of index tensors of batch_size (the last may
    be smaller) covering 0..n-1 once."""
    return list(_permutation(n, seed).split(batch_size))


def bucket_by_length(lengths, batch_size, seed):
    """Batches of similar-length sequences.

    Sort by length (random tie order), chunk, shuffle the batches.

    Shown in chapter 5, "Bucketing by length".
    """
    order = _permutation(len(lengths), seed)
    # a stable sort: ties keep their random order
    by_length = order[torch.sort(lengths[order], stable=True).indices]
    batches = list(by_length.split(batch_size))
    return [batches[i] for i in _permutation(len(batches), seed + 1)]
