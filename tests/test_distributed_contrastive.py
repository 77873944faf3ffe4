"""Contrastive losses under DDP see the global batch: two gloo processes, each with half
of a batch, give the loss and the gradients of one process on the whole batch (SupCon,
BCL, PaCo, and SimCLR's NT-Xent and SwAV's Sinkhorn codes of the self-supervised
pre-training); the per-image NT-Xent of boosted contrastive learning, and the momentum
losses it feeds, too."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from longtail.config import load_config
from longtail.losses import BalancedContrastiveLoss, ParametricContrastiveLoss, SupConLoss
from longtail.losses.distributed import gather, own_positions
from longtail.losses.memorization import MomentumLoss
from longtail.losses.selfsupervised import ntxent_per_image

BATCH, VIEWS, INPUT, DIM, CLASSES, QUEUE = 8, 2, 6, 5, 3, 4


class Model(nn.Module):
    """Features, a projection to the sphere, a classifier and class prototypes: every
    kind of parameter the contrastive methods train."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(INPUT, 7)
        self.projection = nn.Linear(7, DIM)
        self.classifier = nn.Linear(7, CLASSES)
        self.prototypes = nn.Parameter(torch.randn(CLASSES, DIM))

    def forward(self, images):
        features = torch.tanh(self.encoder(images))
        return F.normalize(self.projection(features), dim=-1), self.classifier(features), \
            F.normalize(self.prototypes, dim=1)


def data():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, VIEWS, INPUT, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 0, 2])  # classes on both halves, and a class on one view only
    keys_in = torch.randn(BATCH, INPUT, generator=generator)
    queue = F.normalize(torch.randn(QUEUE, DIM, generator=generator), dim=1)
    return images, labels, keys_in, queue, torch.tensor([2, 0, 1, 1])


def swav_loss():
    """SwAV's swapped prediction as its method builds it: before Lightning starts the
    process group."""
    from longtail.run import build_method

    config = load_config([], ["data.format=digits", "method.name=swav", "model.feat_dim=8", "model.hidden_dim=16",
                              "data.views=[sim_global, sim_global, sim_local, sim_local]"])
    return build_method(config, [50] * 10).swapped_loss


def loss_of(name, model, images, labels, keys_in, queue, queue_labels, swapped=None):
    """The named loss on this process's share of the batch, references gathered."""
    embeddings, logits, prototypes = model(images)
    if name == "swav":  # the two views' scores on the prototypes, their codes from the whole batch
        scores = embeddings @ prototypes.T
        return swapped([scores[:, 0], scores[:, 1]], [])
    if name == "supcon":
        return SupConLoss(temperature=0.1)(embeddings, labels)
    if name == "simclr":  # lightly's NT-Xent, gathering across processes itself
        from lightly.loss import NTXentLoss

        return NTXentLoss(temperature=0.5, gather_distributed=True)(embeddings[:, 0], embeddings[:, 1])
    if name == "bcl":
        return BalancedContrastiveLoss(CLASSES, temperature=0.1)(embeddings, labels, prototypes)
    # PaCo: the first view's queries, keys from a fixed encoder, a queue
    with torch.no_grad():
        keys = F.normalize(keys_in[:, :DIM], dim=1)
    queries = embeddings[:, 0]
    references = torch.cat([gather(queries), gather(keys), queue])
    reference_labels = torch.cat([gather(labels), gather(labels), queue_labels])
    counts = [5, 2, 1]
    return ParametricContrastiveLoss(counts, alpha=0.3, temperature=0.2)(
        queries, labels, logits[:, 0], references, reference_labels, own_positions(len(queries), queries.device))


def worker(rank, world, name, rendezvous, out):
    swapped = swav_loss() if name == "swav" else None
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = nn.parallel.DistributedDataParallel(Model(), find_unused_parameters=True)
        images, labels, keys_in, queue, queue_labels = data()
        share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        loss = loss_of(name, model, images[share], labels[share], keys_in[share], queue, queue_labels, swapped)
        loss.backward()
        reported = loss.detach().clone()
        dist.all_reduce(reported)
        torch.save({"loss": reported / world,
                    "grads": {n: torch.zeros_like(p) if p.grad is None else p.grad
                              for n, p in model.module.named_parameters()}}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["supcon", "bcl", "paco", "simclr", "swav"])
def test_two_processes_equal_one_on_the_concatenated_batch(name, tmp_path):
    model = Model()
    images, labels, keys_in, queue, queue_labels = data()
    loss = loss_of(name, model, images, labels, keys_in, queue, queue_labels, swav_loss() if name == "swav" else None)
    loss.backward()
    assert model.encoder.weight.grad.abs().max() > 0
    mp.spawn(worker, args=(2, name, tmp_path / "rendezvous", tmp_path / "result"), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"result.{rank}")
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for parameter_name, parameter in model.named_parameters():
            expected = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            torch.testing.assert_close(result["grads"][parameter_name], expected, rtol=1e-4, atol=1e-6,
                                       msg=lambda m: f"{name}, {parameter_name}: {m}")


def test_one_process_is_the_identity_of_the_gathers():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather(x) is x
    assert own_positions(3, x.device).tolist() == [0, 1, 2]


def momentum_losses(share, world):
    """Two epochs of momentum losses of the batch's images, this process recording its share."""
    model = Model()
    images = data()[0]
    indices = torch.tensor([5, 0, 7, 2, 9, 3, 1, 8])
    memory = MomentumLoss(10, beta=0.5)
    with torch.no_grad():
        embeddings = model(images[share])[0]
    for epoch in range(2):
        memory.start_epoch(epoch)
        memory.record(indices[share], ntxent_per_image(embeddings[:, 0], embeddings[:, 1], 0.5) * (epoch + 1))
    memory.start_epoch(2)
    return memory


def momentum_worker(rank, world, rendezvous, out):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        memory = momentum_losses(slice(rank * BATCH // world, (rank + 1) * BATCH // world), world)
        torch.save(memory.state_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_record_the_momentum_losses_of_one_on_the_concatenated_batch(tmp_path):
    expected = momentum_losses(slice(None), 1).state_dict()
    assert expected["averaged"].sum() == BATCH
    mp.spawn(momentum_worker, args=(2, tmp_path / "rendezvous", tmp_path / "result"), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"result.{rank}")
        for key, value in expected.items():
            torch.testing.assert_close(result[key], value, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
