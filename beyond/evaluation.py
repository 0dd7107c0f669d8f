"""Held-out evaluation: is the model better than recommending the most popular movies? (--evaluate)

The tutorial trains on a shuffled 80% of the ratings and reports TFRS's top-k accuracy on the other 20%.
This module does the same, and adds what it takes to read that number honestly:

    1. split_like_the_tutorial: the tutorial's own split, row for row
    2. build_most_popular_model: the baseline, as a two-tower model scored by the same code
    3. held_out_metrics: top-k accuracy as TFRS computes it, then Recall@10 and NDCG@10 with each user's
       training movies left out, a block of users at a time (catalogue_ranking_metrics)
    4. evaluate and spread: one model per seed, and each metric's mean and standard deviation (--repeat)

    python recommend.py --evaluate
    python recommend.py --evaluate --tuned --repeat 5
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

import recommend
from beyond import big_data, guards

# The tutorial's held-out evaluation: shuffle once with this seed, train on 80%, test on 20%.
SPLIT_SEED = 42
TRAIN_FRACTION = 0.8
RANKING_CUTOFF = 10
# Users ranked against the whole catalogue at once: 1,024 users x 62,423 movies of MovieLens 25M take
# about 1 GB with the sort's working copies.
USERS_PER_BLOCK = 1024


def evaluate(data: recommend.MovieLens, recipe, seeds: list[int], log=None, strategy=None) -> dict:
    """Trains on the tutorial's 80% split, once per seed, and compares each model with "most popular" on the
    other 20%. Returns the split's sizes, one dict of metrics per seed, and most-popular's metrics.
    With a TensorBoard log, each model gets a run folder with its loss curve, metrics and embeddings;
    with a distribution strategy, each is trained under it."""
    train_rows, test_rows = split_like_the_tutorial(data)
    training, held_out = subset(data, train_rows), subset(data, test_rows)
    big_data.check_memory(recipe, big_data.sizes_of(training))
    user_ids_vocabulary, movie_titles_vocabulary = recommend.build_vocabularies(data)
    catalogue = data.catalogue
    # Most-popular learns nothing random, so one evaluation serves every seed.
    most_popular = held_out_metrics(
        build_most_popular_model(movie_titles_vocabulary, training), training, held_out
    )
    two_tower_runs = []
    for run_number, seed in enumerate(seeds, start=1):
        if len(seeds) > 1:
            recommend.progress(f"Run {run_number} of {len(seeds)}, seed {seed}")
        tf.keras.utils.set_random_seed(seed)
        run = log.new_run(seed) if log else None
        with (strategy or tf.distribute.get_strategy()).scope():
            two_tower = recipe.build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue)
            epochs = guards.run_training(
                two_tower, training, recipe, seed, (log.callback(run),) if log else ()
            )
        if strategy is not None and strategy is not tf.distribute.get_strategy():
            # Evaluated on this machine alone: Keras would otherwise spread the test set over the workers
            # and add up their top-k accuracies.
            trained = two_tower
            two_tower = recipe.build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue)
            two_tower.user_model.set_weights(trained.user_model.get_weights())
            two_tower.movie_model.set_weights(trained.movie_model.get_weights())
        recommend.progress(f"Evaluating on {len(test_rows):,} held-out ratings")
        two_tower_runs.append(held_out_metrics(two_tower, training, held_out))
        if log:
            log.write_held_out(
                run, {"two_tower": two_tower_runs[-1], "most_popular": most_popular}, epochs - 1
            )
            log.write_projector(
                run, two_tower.movie_model(catalogue), catalogue, big_data.ratings_per_title(training)
            )
            recommend.progress(f"TensorBoard log in {run}")
    return {
        "split": {"train": len(train_rows), "test": len(test_rows)},
        "two_tower": two_tower_runs,
        "most_popular": most_popular,
    }


def spread(runs: list[dict]) -> dict:
    """Each metric's mean and sample standard deviation over the runs (0 for a single run)."""
    return {
        metric: {
            "mean": round(float(np.mean([run[metric] for run in runs])), 4),
            "std": round(float(np.std([run[metric] for run in runs], ddof=1)) if len(runs) > 1 else 0.0, 4),
        }
        for metric in runs[0]
    }


def subset(data: recommend.MovieLens, rows: np.ndarray) -> recommend.MovieLens:
    """Only the ratings in ROWS; the users, titles and catalogue stay those of the whole dataset."""
    return dataclasses.replace(
        data,
        rating_users=data.rating_users[rows],
        rating_titles=data.rating_titles[rows],
        rating_stars=data.rating_stars[rows],
    )


def split_like_the_tutorial(data: recommend.MovieLens) -> tuple[np.ndarray, np.ndarray]:
    """Returns the rows of the tutorial's held-out split: (training rows, test rows).

    The tutorial shuffles the 100,000 ratings once with fixed seeds and takes the first 80,000 for
    training and the other 20,000 for testing. Shuffling the row numbers the same way gives the same
    split, because a seeded shuffle's order depends only on the seeds, the buffer and the number of
    elements. Other sizes are split alike, 80% to train on, shuffled within SHUFFLE_BUFFER_SIZE ratings.
    """
    count = data.num_ratings
    tf.random.set_seed(SPLIT_SEED)
    rows = tf.data.Dataset.range(count)
    buffer = min(max(count, 100_000), recommend.SHUFFLE_BUFFER_SIZE)
    shuffled = rows.shuffle(buffer, seed=SPLIT_SEED, reshuffle_each_iteration=False)
    order = shuffled.batch(count).get_single_element().numpy()
    train_size = round(count * TRAIN_FRACTION)
    return order[:train_size], order[train_size:]


def build_most_popular_model(
    movie_titles_vocabulary, training: recommend.MovieLens
) -> recommend.MovieLensModel:
    """ "Recommend the most rated movies" written as a two-tower model, so it is evaluated by the same code.

    Every user is the vector [1] and every movie the vector [its number of training ratings], so a
    user's score for a movie is that movie's popularity.
    """
    vocabulary_size = movie_titles_vocabulary.vocabulary_size()
    rating_counts = np.zeros([vocabulary_size, 1], np.float32)
    rating_counts[movie_titles_vocabulary(training.catalogue).numpy(), 0] = big_data.ratings_per_title(
        training
    )
    everyone_alike = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string),
            tf.keras.layers.Lambda(lambda user_ids: tf.ones([tf.shape(user_ids)[0], 1])),
        ]
    )
    movie_popularity = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string),
            movie_titles_vocabulary,
            tf.keras.layers.Embedding(
                vocabulary_size, 1, embeddings_initializer=tf.keras.initializers.Constant(rating_counts)
            ),
        ]
    )
    task = recommend.retrieval_task(movie_popularity, training.catalogue)
    return recommend.MovieLensModel(everyone_alike, movie_popularity, task)


def held_out_metrics(model, training: recommend.MovieLens, held_out: recommend.MovieLens) -> dict:
    """Top-k accuracy as TFRS computes it, then Recall@10 and NDCG@10 with training movies left out."""
    test = tf.data.Dataset.range(held_out.num_ratings).batch(4096).map(recommend.rating_features(held_out))
    # `compile` only because Keras requires it before `evaluate`; nothing is trained here.
    model.compile(optimizer=tf.keras.optimizers.Adagrad())
    results = model.evaluate(test, return_dict=True, verbose=0, callbacks=[EvaluationProgress()])
    metrics = {
        f"top_{k}": results[f"factorized_top_k/top_{k}_categorical_accuracy"] for k in recommend.TOP_KS
    }
    metrics.update(catalogue_ranking_metrics(model, training, held_out))
    return {name: round(float(value), 4) for name, value in metrics.items()}


def catalogue_ranking_metrics(model, training: recommend.MovieLens, held_out: recommend.MovieLens) -> dict:
    """Recall@10 and NDCG@10 over the users with held-out movies, each user's training movies left out."""
    # Every movie is scored for every user, a block of users at a time: one matrix product each, and a
    # users x catalogue matrix small enough for 162,541 users in a few blocks.
    movie_embeddings = model.movie_model(training.catalogue)
    training_rated, held_out_rated = big_data.rated_by_user(training), big_data.rated_by_user(held_out)
    recalls, ndcgs, heartbeat = [], [], recommend.Heartbeat()
    for first in range(0, len(training.users), USERS_PER_BLOCK):
        block = slice(first, min(first + USERS_PER_BLOCK, len(training.users)))
        scores = tf.matmul(model.user_model(training.users[block]), movie_embeddings, transpose_b=True)
        recall, ndcg = ranking_metrics(
            scores.numpy(),
            seen=rated_matrix(training_rated, block, len(training.catalogue_rows)),
            relevant=rated_matrix(held_out_rated, block, len(held_out.catalogue_rows)),
            cutoff=RANKING_CUTOFF,
        )
        recalls.append(recall)
        ndcgs.append(ndcg)
        heartbeat.beat(f"  ranked the catalogue for {block.stop:,} of {len(training.users):,} users")
    recall, ndcg = np.concatenate(recalls), np.concatenate(ndcgs)
    return {
        f"recall_at_{RANKING_CUTOFF}": recall.mean() if len(recall) else math.nan,
        f"ndcg_at_{RANKING_CUTOFF}": ndcg.mean() if len(ndcg) else math.nan,
    }


class EvaluationProgress(tf.keras.callbacks.Callback):
    """Says how far Keras's evaluate has got, every few seconds (it takes minutes on MovieLens 25M)."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True

    def on_test_begin(self, logs=None):
        self.heartbeat = recommend.Heartbeat()

    def on_test_batch_end(self, batch, logs=None):
        self.heartbeat.beat(f"  top-k accuracy: {guards.batches_done(batch, self.params)}")


def rated_matrix(
    rated_by_user: tuple[np.ndarray, np.ndarray], users: slice, catalogue_size: int
) -> np.ndarray:
    """A users x catalogue boolean matrix for a block of users: True where the user rated the title."""
    offsets, rows = rated_by_user
    block = offsets[users.start : users.stop + 1]
    matrix = np.zeros((len(block) - 1, catalogue_size), dtype=bool)
    matrix[np.repeat(np.arange(len(block) - 1), np.diff(block)), rows[block[0] : block[-1]]] = True
    return matrix


def ranking_metrics(
    scores: np.ndarray, seen: np.ndarray, relevant: np.ndarray, cutoff: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@cutoff and NDCG@cutoff of each user with something relevant to find (others are left out).

    scores, seen and relevant are users x movies. Movies a user has seen in training are left out of
    their ranking, and a movie counts as relevant only if it was not seen. On equal scores the movie
    with the lower column comes first.
    """
    relevant = relevant & ~seen
    # top_k puts the lower column first on equal scores, as a stable sort would, and finds ten of 62,423
    # in a twelfth of the time a full sort of every row takes.
    ranked = tf.math.top_k(np.where(seen, -np.inf, scores), k=cutoff).indices.numpy()
    hits = np.take_along_axis(relevant, ranked, axis=1)
    num_relevant = relevant.sum(axis=1)
    users = num_relevant > 0
    discounts = 1.0 / np.log2(np.arange(2, cutoff + 2))  # rank 1 has gain 1/log2(2) = 1
    dcg = (hits * discounts).sum(axis=1)[users]
    ideal_dcg = np.cumsum(discounts)[np.minimum(num_relevant[users], cutoff) - 1]
    return hits.sum(axis=1)[users] / num_relevant[users], dcg / ideal_dcg
