"""Chan et al.'s pairwise update: the count, mean and sum of squared
deviations (M2) of several parts merged without E[x^2] - E[x]^2.

`normlib.functional.merge_moments` is where to find it; SyncBatchNorm merges
the processes' statistics with it.
"""


def merge_moments(counts, means, m2s):
    """Merge P parts' (count, mean, M2) with Chan et al.'s pairwise update.

    counts (P,), means and m2s (P, C): part p has counts[p] values per
    channel, their mean and their sum of squared deviations from that mean.
    A part with count 0 adds nothing.  The correction term is never a
    difference of two large numbers, so the result is as accurate as the
    parts' own M2.

    Shown in chapter 11, "The derivation and the module".
    """
    count, mean, m2 = counts[0], means[0], m2s[0]
    for count_b, mean_b, m2_b in zip(counts[1:], means[1:], m2s[1:]):
        total = count + count_b
        if total == 0:
            continue
        delta = mean_b - mean
        mean = mean + delta * (count_b / total)
        m2 = m2 + m2_b + delta ** 2 * (count * count_b / total)
        count = total
    return count, mean, m2
