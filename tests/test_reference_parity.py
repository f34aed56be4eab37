"""Parity with the official CycleGAN, StarGAN v2 and InstaGAN code, on the shared fixtures.

`../shared/reference-parity/` (README there) holds tensors recorded by running each method's
reference implementation on tiny networks. Each test here builds i2ibench's model from the
fixture's class and kwargs, loads the reference's initial weights through the verified key maps,
drives i2ibench's own `training_step` on the recorded inputs and random draws, and compares every
forward output (forward hooks, matched by role), every loss term, the gradient norms just before
each optimiser step, and the weights after each iteration, at the README's measured tolerances
(section 5). These are the guard that keeps later changes faithful to the references.

Runs single-threaded and deterministic, as the fixtures were made: other thread counts round
differently (README section 4).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from contextlib import contextmanager
from functools import lru_cache

import pytest
import pytorch_lightning as pl
import torch
from conftest import SHARED

FIXTURES = SHARED / "reference-parity"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"{FIXTURES} not present (reference-parity fixtures)")

# Share of elements of one tensor that may exceed the weight tolerance: Adam turns a gradient near
# its eps into a step of about lr with a rounding-dependent sign (README section 5, "near-eps").
NEAR_EPS_SHARE = 0.001


@lru_cache(maxsize=None)
def load_fixture(name: str) -> dict:
    path = FIXTURES / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return torch.load(path, weights_only=True)


@contextmanager
def single_threaded():
    """One thread, deterministic algorithms: the fixtures' protocol (README section 1)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def build(fx: dict) -> pl.LightningModule:
    module, name = fx["i2ibench"]["class"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**fx["i2ibench"]["kwargs"])


class Recorder:
    """Drives `training_step` outside `fit` and records what it shows.

    The model gets its own optimisers, a plain backward and a loss recorder in place of Lightning's
    logging, and a real (unfitted, single-process) Trainer, so that `trainer.world_size` and the
    strategy answer as on one process. Records are grouped by `phase`: an iteration, or for InstaGAN
    a sequential pass (advanced by each discriminator step, as the reference's pass boundary).
    """

    def __init__(self, model: pl.LightningModule, nets: list[str], phase_ends_with_optimizer: int | None = None):
        self.model, self.phase = model, 0
        self.calls: dict[int, list[tuple[str, object]]] = defaultdict(list)  # phase -> [(net, output)]
        self.grads: dict[int, list[tuple[int, dict]]] = defaultdict(list)  # phase -> [(optimizer, {(net, key): norm})]
        self.losses: list[dict[str, float]] = []  # one entry per log_losses call
        optimizers = model.configure_optimizers()
        optimizers = list(optimizers[0] if isinstance(optimizers, tuple) else optimizers)
        self.optimizers = optimizers
        model.optimizers = lambda *args, **kwargs: optimizers
        model.manual_backward = lambda loss, *args, **kwargs: loss.backward()
        model.log_losses = lambda losses, **kwargs: self.losses.append(
            {name: float(value.detach()) for name, value in losses.items()})
        model.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                   enable_progress_bar=False, enable_model_summary=False)
        model.train()  # spectral norm runs its power iteration only in training mode

        owner = {id(p): (net, key) for net in nets for key, p in getattr(model, net).named_parameters()}
        for index, optimizer in enumerate(optimizers):
            optimizer.register_step_pre_hook(self.grad_norm_hook(index, owner))
        if phase_ends_with_optimizer is not None:
            optimizers[phase_ends_with_optimizer].register_step_post_hook(lambda *_: self.next_phase())
        for net in nets:
            getattr(model, net).register_forward_hook(self.output_hook(net))

    def next_phase(self) -> None:
        self.phase += 1

    def grad_norm_hook(self, index: int, owner: dict):
        def hook(optimizer, args, kwargs):
            norms = {owner[id(p)]: float(p.grad.norm()) for group in optimizer.param_groups
                     for p in group["params"] if p.grad is not None}
            self.grads[self.phase].append((index, norms))
        return hook

    def output_hook(self, net: str):
        def hook(module, args, output):
            # InstaGAN's generators return (image, masks): the reference stores them concatenated.
            tensor = torch.cat(output, dim=1) if isinstance(output, tuple) else output
            self.calls[self.phase].append((net, tensor.detach().clone()))
        return hook

    def outputs_by_net(self, phase: int) -> dict[str, list[torch.Tensor]]:
        found = defaultdict(list)
        for net, output in self.calls[phase]:
            found[net].append(output)
        return found

    def state(self, net: str) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in getattr(self.model, net).state_dict().items()}


# -- comparisons: each collects every mismatch, so one failure shows the whole picture ------------
def describe(label: str, mine: torch.Tensor, ref: torch.Tensor, atol: float) -> str | None:
    if mine.shape != ref.shape:
        return f"{label}: shape {tuple(mine.shape)} != reference {tuple(ref.shape)}"
    diff = (mine.float() - ref.float()).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    if worst <= atol:
        return None
    return f"{label}: max|diff| {worst:.3g} > atol {atol:g} ({int((diff > atol).sum())} of {diff.numel()} elements)"


def check_outputs(problems: list, label: str, mine: list[torch.Tensor], refs: list[torch.Tensor | None],
                  atol: float) -> None:
    """Outputs of one network, in call order; a None reference is a call the fixture did not store."""
    if len(mine) != len(refs):
        problems.append(f"{label}: {len(mine)} calls, the reference made {len(refs)}")
        return
    for n, (m, r) in enumerate(zip(mine, refs)):
        if r is not None and (message := describe(f"{label}[{n}]", m, r, atol)):
            problems.append(message)


def check_losses(problems: list, label: str, logged: dict[str, float], expected: dict[str, float],
                 rel: float, abs_: float) -> None:
    """Every term i2ibench logs is a reference term and vice versa, each equal within rel/abs."""
    if set(logged) != set(expected):
        problems.append(f"{label}: logged terms {sorted(logged)} != reference terms {sorted(expected)}")
    for name, ref in expected.items():
        if name in logged and logged[name] != pytest.approx(ref, rel=rel, abs=abs_):
            problems.append(f"{label}.{name}: {logged[name]!r} != reference {ref!r} (rel {rel:g}, abs {abs_:g})")


def check_grad_norms(problems: list, label: str, mine: dict, expected: dict, rel: float,
                     noise: set, noise_atol: float) -> None:
    """`mine` and `expected` map i2ibench (net, key) to a norm. Noise-gradient biases (their gradient
    is zero in exact arithmetic) only have to be near zero on both sides."""
    if set(mine) != set(expected):
        only_mine, only_ref = sorted(set(mine) - set(expected)), sorted(set(expected) - set(mine))
        problems.append(f"{label}: parameters with gradients differ: only i2ibench {only_mine[:5]}, "
                        f"only reference {only_ref[:5]}")
    for key, ref in expected.items():
        if key not in mine:
            continue
        if key in noise:
            ok = abs(mine[key]) <= noise_atol and abs(ref) <= noise_atol
        else:
            ok = mine[key] == pytest.approx(ref, rel=rel, abs=1e-12)
        if not ok:
            problems.append(f"{label}.{'.'.join(key)}: grad norm {mine[key]!r} != reference {ref!r}")


def check_state(problems: list, label: str, mine: dict, ref: dict, key_map: dict, *, atol: float,
                noise: set = frozenset(), noise_atol: float = 0.0, outlier_atol: float | None = None,
                special: dict | None = None, sampled: set = frozenset(), stride: int = 1) -> None:
    """Weights after a step. `sampled` reference tensors hold t.flatten()[::stride]; `special` maps a
    reference key to its own atol (e.g. spectral-norm u, v); up to NEAR_EPS_SHARE of a tensor may
    exceed `atol` while staying within `outlier_atol`."""
    unmapped = set(mine) - {key_map[k] for k in ref}
    if unmapped:
        problems.append(f"{label}: i2ibench entries without a reference counterpart: {sorted(unmapped)}")
    for key, r in ref.items():
        m = mine[key_map[key]]
        if key in sampled:
            m = m.flatten()[::stride]
        tol = noise_atol if key in noise else (special or {}).get(key, atol)
        if m.shape != r.shape:
            problems.append(f"{label}.{key}: shape {tuple(m.shape)} != reference {tuple(r.shape)}")
            continue
        diff = (m - r).abs()
        above = int((diff > tol).sum())
        if above == 0:
            continue
        allowed = int(NEAR_EPS_SHARE * diff.numel())
        if outlier_atol is not None and key not in noise and above <= allowed and float(diff.max()) <= outlier_atol:
            continue
        problems.append(f"{label}.{key}: max|diff| {float(diff.max()):.3g} > atol {tol:g} "
                        f"({above} of {diff.numel()} elements)")


def assert_no_problems(problems: list) -> None:
    assert not problems, f"{len(problems)} mismatches against the reference:\n  " + "\n  ".join(problems[:40])


def load_initial_weights(model, fx: dict) -> None:
    sec = fx["i2ibench"]
    for ref_net, net in sec["net_map"].items():
        getattr(model, net).load_state_dict({sec["key_map"][ref_net][k]: v for k, v in fx["init"][ref_net].items()})


def reference_grad_norms(fx: dict, per_net: dict) -> dict:
    """The reference's per-net norms keyed like i2ibench's, (net, key); keys that are no parameter
    in i2ibench (InstaGAN's frozen spectral-norm u, v: buffers, never given a gradient) are dropped."""
    sec = fx["i2ibench"]
    return {(sec["net_map"][ref_net], sec["key_map"][ref_net][key]): value
            for ref_net, norms in per_net.items() for key, value in norms.items()
            if not key.endswith(("weight_u", "weight_v"))}


def noise_keys(fx: dict) -> set:
    sec = fx["i2ibench"]
    return {(sec["net_map"][ref_net], sec["key_map"][ref_net][key])
            for ref_net, keys in fx["noise_bias_keys"].items() for key in keys}


# -- CycleGAN -------------------------------------------------------------------------------------
def test_cyclegan_matches_reference():
    """Two iterations: all six generator outputs, the six D maps, 7 G + 2 D loss terms, gradient
    norms of both Adam steps, and weights after each (the second step pins down beta1)."""
    fx = load_fixture("cyclegan")
    sec, problems = fx["i2ibench"], []
    lr = sec["kwargs"]["lr"]
    with single_threaded():
        model = build(fx)
        load_initial_weights(model, fx)
        nets = list(sec["net_map"].values())
        rec = Recorder(model, nets, phase_ends_with_optimizer=1)
        noise = noise_keys(fx)
        sampled_iterations, stride = fx["sampling"]["iterations"], fx["sampling"]["stride"]
        for i, it in enumerate(fx["iterations"]):
            model.training_step({k: v.clone() for k, v in it["inputs"].items()}, i)
            # Forward outputs, matched by role: i2ibench calls each generator in its own order.
            forward, outputs = it["forward"], rec.outputs_by_net(i)
            roles = {"gen_AB": ["fake_B", "rec_B", "idt_A"], "gen_BA": ["fake_A", "rec_A", "idt_B"]}
            for net, names in roles.items():
                check_outputs(problems, f"it{i}.{net}", outputs[net], [forward.get(n) for n in names], 1e-5)
            for ref_net in ("D_A", "D_B"):  # each D: G-step fake, real, pooled fake
                net = sec["net_map"][ref_net]
                check_outputs(problems, f"it{i}.{net}", outputs[net], forward[f"{ref_net}_outputs"], 1e-5)
            # Loss terms.
            expected = {sec["loss_map"][n]: v for terms in it["losses"].values() for n, v in terms.items()}
            check_losses(problems, f"it{i}.losses", rec.losses[i], expected, rel=1e-5, abs_=1e-6)
            # Gradient norms just before each step: G then D.
            steps = rec.grads[i]
            if [index for index, _ in steps] != [0, 1]:
                problems.append(f"it{i}: optimiser steps {[index for index, _ in steps]}, expected G then D")
            else:
                for (_, norms), name in zip(steps, ("optimizer_G", "optimizer_D")):
                    check_grad_norms(problems, f"it{i}.{name}", norms, reference_grad_norms(fx, it["grad_norms"][name]),
                                     1e-5, noise, 1e-4)
            # Weights after the iteration.
            for ref_net, net in sec["net_map"].items():
                sampled = set(fx["sampling"]["after_keys"][ref_net]) if i in sampled_iterations else set()
                check_state(problems, f"it{i}.{net}", rec.state(net), it["after"][ref_net], sec["key_map"][ref_net],
                            atol=1e-6, noise=set(fx["noise_bias_keys"][ref_net]),
                            noise_atol=3 * lr * (i + 1), sampled=sampled, stride=stride)
    assert_no_problems(problems)


# -- InstaGAN -------------------------------------------------------------------------------------
# Per pass: outputs, losses and gradient norms; pass 1 starts from weights that rounded differently
# (i2ibench batches the instances in one mask-encoder call) and from a spectral-norm sigma after one
# power iteration per call instead of per instance (README section 5), hence its looser tolerances.
INSTAGAN_PASS_TOLERANCES = [dict(outputs=1e-4, loss_rel=1e-5, loss_abs=1e-6, grad_rel=1e-3),
                            dict(outputs=1e-3, loss_rel=1e-4, loss_abs=1e-6, grad_rel=1e-3)]


@pytest.mark.parametrize("scenario", ["one_pass", "two_pass"])
def test_instagan_matches_reference(scenario):
    """One training step (one or two sequential passes): set-G outputs, set-D maps, 9 G + 2 D loss
    terms and gradient norms per pass, and the weights (with spectral-norm u, v) after the step."""
    fx = load_fixture("instagan")
    sec, problems = fx["i2ibench"], []
    data = fx["scenarios"][scenario]
    lr = sec["kwargs"]["lr"]
    with single_threaded():
        model = build(fx)
        load_initial_weights(model, fx)
        rec = Recorder(model, list(sec["net_map"].values()), phase_ends_with_optimizer=1)
        noise = noise_keys(fx)
        inputs = data["inputs"]
        batch = {"A": inputs["A"].clone(), "B": inputs["B"].clone(),
                 "A_masks": inputs["A_masks"].float(), "B_masks": inputs["B_masks"].float(),
                 "A_count": torch.tensor([inputs["A_count"]]), "B_count": torch.tensor([inputs["B_count"]])}
        model.training_step(batch, 0)

        passes = data["passes"]
        if rec.phase != len(passes) or len(rec.losses) != len(passes):
            problems.append(f"{rec.phase} passes with updates ({len(rec.losses)} logged), reference {len(passes)}")
        for p, record in enumerate(passes[:rec.phase]):
            assert record["forward_A"] and record["forward_B"], "fixture pass without both directions"
            tol, out, mine = INSTAGAN_PASS_TOLERANCES[min(p, 1)], record["outputs"], rec.outputs_by_net(p)
            # Calls per pass: gen_AB fake_B, rec_B, idt_A; gen_BA rec_A, idt_B, fake_A (identities unstored);
            # each D: G-step fake, real, pooled fake.
            expected_calls = {
                "gen_AB": [out["fake_B"], out["rec_B"], None], "gen_BA": [out["rec_A"], None, out["fake_A"]],
                "disc_B": [out["D_A_fake_B_for_G"], out["D_A_real_B"], out["D_A_fake_B_pooled"]],
                "disc_A": [out["D_B_fake_A_for_G"], out["D_B_real_A"], out["D_B_fake_A_pooled"]],
            }
            for net, refs in expected_calls.items():
                check_outputs(problems, f"pass{p}.{net}", mine[net], refs, tol["outputs"])
            expected = {sec["loss_map"][n]: v for terms in record["losses"].values() for n, v in terms.items()}
            check_losses(problems, f"pass{p}.losses", rec.losses[p], expected, tol["loss_rel"], tol["loss_abs"])
            steps = rec.grads[p]
            if [index for index, _ in steps] != [0, 1]:
                problems.append(f"pass{p}: optimiser steps {[index for index, _ in steps]}, expected G then D")
            else:
                for (_, norms), name in zip(steps, ("optimizer_G", "optimizer_D")):
                    expected = reference_grad_norms(fx, record["grad_norms"][name])
                    check_grad_norms(problems, f"pass{p}.{name}", norms, expected, tol["grad_rel"], noise, 1e-4)

        steps = len(passes)  # one Adam step per pass for G and for D
        one_pass = steps == 1
        for ref_net, net in sec["net_map"].items():
            after = data["after"][ref_net]
            uv = {k: (1e-6 if one_pass else 1e-2) for k in after if k.endswith(("weight_u", "weight_v"))}
            check_state(problems, f"after.{net}", rec.state(net), after, sec["key_map"][ref_net],
                        atol=1e-6 if one_pass else 1e-4, outlier_atol=3 * lr * steps, special=uv,
                        noise=set(fx["noise_bias_keys"][ref_net]), noise_atol=3 * lr * steps)
    assert_no_problems(problems)


# -- StarGAN v2 -----------------------------------------------------------------------------------
def decode_initial(fx: dict, group: str, ref_net: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Initial weights w = q * 2**e. Sampled EMA tensors hold t.flatten()[::stride]; the other entries
    are filled with zeros (the EMA update is elementwise and EMA nets never enter a step)."""
    sec, sampling = fx["i2ibench"], fx["sampling"]
    key_map, sampled = sec["key_map"][group][ref_net], set(sampling["init_keys"][group][ref_net])
    state = {}
    for key, q in fx["init_q"][group][ref_net].items():
        weight = q.float() * 2.0 ** fx["init_exp"][group][ref_net][key]
        mine = key_map[key]
        if key in sampled:
            full = torch.zeros_like(template[mine])
            full.view(-1)[::sampling["stride"]] = weight
            weight = full
        state[mine] = weight
    return state


def stargan_loss_names(fx: dict, losses: dict) -> dict[str, float]:
    """Reference terms ('D/latent' -> 'real', ...) under i2ibench's logged names ('D_latent_real')."""
    loss_map, expected = fx["i2ibench"]["loss_map"], {}
    for group, terms in losses.items():
        side, kind = group.split("/")
        for term, value in terms.items():
            expected[loss_map[f"{side}/<kind>.{term}"].replace("<kind>", kind)] = value
    return expected


def test_stargan_v2_matches_reference():
    """Two full iterations: the 24 network calls in order, 18 loss terms, lambda_ds and its decay,
    gradient norms before each of the six optimiser steps, trained and EMA weights after each."""
    fx = load_fixture("stargan_v2")
    sec, problems = fx["i2ibench"], []
    sampling = fx["sampling"]
    lr = sec["kwargs"]["lr"]
    with single_threaded():
        model = build(fx)
        for group, nets in sec["net_map"].items():
            for ref_net, net in nets.items():
                module = getattr(model, net)
                module.load_state_dict(decode_initial(fx, group, ref_net, module.state_dict()))
        trained = list(sec["net_map"]["nets"].values())
        rec = Recorder(model, trained)
        order = sec["optimizer_order"]
        noise_trained = set(fx["noise_bias_keys"]["generator"])
        for i, it in enumerate(fx["iterations"]):
            rec.phase = i
            inputs, draws = it["inputs"], it["random_draws"]
            batch = {"x": inputs["x_src"], "y": inputs["y_src"], "y_ref": inputs["y_ref"], "x_ref": inputs["x_ref"],
                     "x_ref2": inputs["x_ref2"], "z": draws["z_trg"], "z2": draws["z_trg2"]}
            model.training_step({k: v.clone() for k, v in batch.items()}, i)

            # The 24 calls, in the reference's order.
            calls = rec.calls[i]
            if [net for net, _ in calls] != [sec["net_map"]["nets"][c["net"]] for c in it["calls"]]:
                problems.append(f"it{i}: call order {[net for net, _ in calls]} differs from the reference's")
            else:
                for n, ((net, output), ref) in enumerate(zip(calls, it["calls"])):
                    if message := describe(f"it{i}.call{n}.{ref['step']}.{ref['role']}", output, ref["output"], 1e-6):
                        problems.append(message)

            # Loss terms, and lambda_ds: used 2.0 then 1.5, and 1.0 left for a third iteration.
            check_losses(problems, f"it{i}.losses", rec.losses[i], stargan_loss_names(fx, it["losses"]),
                         rel=1e-6, abs_=1e-9)
            if rec.losses[i].get("lambda_ds") != pytest.approx(it["lambda_ds_used"], abs=1e-12):
                problems.append(f"it{i}: lambda_ds {rec.losses[i].get('lambda_ds')} != {it['lambda_ds_used']}")
            if model.diversity_weight() != pytest.approx(it["lambda_ds_after"], abs=1e-12):
                problems.append(f"it{i}: lambda_ds after the iteration {model.diversity_weight()} "
                                f"!= reference {it['lambda_ds_after']}")

            # Gradient norms before each optimiser step: D, D, then G, F, E, then G.
            steps = rec.grads[i]
            stepped = [order[index] for index, _ in steps]
            if stepped != [net for _, net in it["optimizer_steps"]]:
                problems.append(f"it{i}: optimiser steps {stepped} != reference {it['optimizer_steps']}")
            else:
                for (_, norms), (step, ref_net) in zip(steps, it["optimizer_steps"]):
                    key_map = sec["key_map"]["nets"][ref_net]
                    expected = {(sec["net_map"]["nets"][ref_net], key_map[k]): v
                                for k, v in it["grad_norms"][step][ref_net].items()}
                    net = sec["net_map"]["nets"][ref_net]
                    noise = {(net, key_map[k]) for k in noise_trained} if ref_net == "generator" else set()
                    check_grad_norms(problems, f"it{i}.{step}.{ref_net}", norms, expected, 1e-6, noise, 1e-5)

            # Weights after the iteration: trained nets, then the moving averages.
            for group, nets in sec["net_map"].items():
                ema = group == "nets_ema"
                for ref_net, net in nets.items():
                    noise = set(fx["noise_bias_keys"].get(net, ()))  # generator / generator_ema
                    g_noise = 3 * lr * 2 * (i + 1)  # 2 generator steps per iteration
                    check_state(problems, f"it{i}.{net}", rec.state(net), it["after"][group][ref_net],
                                sec["key_map"][group][ref_net], atol=1e-7 if ema else 1e-6, noise=noise,
                                noise_atol=(1 - sec["kwargs"]["ema_beta"]) * g_noise if ema else g_noise,
                                sampled=set(sampling["after_keys"][group][ref_net]), stride=sampling["stride"])
            # The mapping network's sampled tensors, summed in full (float64).
            state = rec.state("mapping_network")
            for key, sums in it["after_sums"]["nets"]["mapping_network"].items():
                full = state[sec["key_map"]["nets"]["mapping_network"][key]].double()
                for what, value in (("sum", full.sum()), ("abs_sum", full.abs().sum())):
                    if float(value) != pytest.approx(sums[what], rel=1e-9, abs=1e-12):
                        problems.append(f"it{i}.mapping_network.{key}: {what} {float(value)!r} != {sums[what]!r}")
    assert_no_problems(problems)
