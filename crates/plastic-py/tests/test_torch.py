"""plastic.torch: named torch parameters, gradcheck in float64 for every cell x rule (the
engine's forward and VJP, and the fused loss), composition with a torch CNN that learns."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import plastic  # noqa: E402
import plastic.torch as pt  # noqa: E402

RULES = ["gradient", "hebbian", "none"]
CELLS = ["rnn", "lstm"]


def small(rnn, rule, **kw):
    return pt.PlasticRNN(rnn=rnn, plasticity=rule, input_size=3, hidden_size=4, output_size=2,
                         seed=11, dtype=torch.float64, **kw)


def test_named_parameters_are_the_engines():
    m = pt.PlasticRNN(rnn="lstm", plasticity="gradient", input_size=3, hidden_size=4,
                      output_size=2, layernorm=True)
    net = plastic.Network(rnn="lstm", plasticity="gradient", input_size=3, hidden_size=4,
                          output_size=2, layernorm=True)
    names = dict(m.named_parameters())
    assert set(names) == set(net.parameters())
    for n, v in net.parameters().items():
        assert names[n].dtype == torch.float32
        np.testing.assert_array_equal(names[n].detach().numpy(), v)
    assert "rec.alpha_w_h" in m.state_dict() and "layernorm.gamma" in m.state_dict()
    # fixed weights of a random network do not train
    r = pt.PlasticRNN(input_size=3, hidden_size=4, output_size=2, random_network=True)
    frozen = {n for n, p in r.named_parameters() if not p.requires_grad}
    assert "rec.w_h" in frozen and "rec.alpha_w_h" not in frozen


def test_forward_matches_the_numpy_api():
    m = pt.PlasticRNN(task="cue-reward", hidden_size=16, seed=2)
    net = plastic.Network(task="cue-reward", hidden_size=16, seed=2)
    b = plastic.episodes(task="cue-reward", batch=3)
    out = m(torch.from_numpy(b["inputs"]))
    np.testing.assert_array_equal(out.detach().numpy(), net.forward(b["inputs"])["outputs"])
    d = m.diagnostics(torch.from_numpy(b["inputs"]))
    assert d["plasticity_rate"].shape == (3, 20)


@pytest.mark.parametrize("rnn,rule", list(itertools.product(CELLS, RULES)))
def test_gradcheck_forward_and_vjp(rnn, rule):
    m = small(rnn, rule)
    x = (0.5 * torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
         ).requires_grad_()
    names = m._names
    params = tuple(m.get_parameter(n) for n in names)

    def f(x, *p):
        return pt._EngineForward.apply(m._network(torch.float64), names, x, *p)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rnn,rule", list(itertools.product(CELLS, RULES)))
def test_gradcheck_fused_loss(rnn, rule):
    m = small(rnn, rule)
    g = torch.Generator().manual_seed(1)
    x = (0.5 * torch.randn(2, 4, 3, dtype=torch.float64, generator=g)).requires_grad_()
    y = torch.randn(2, 4, 2, dtype=torch.float64, generator=g)
    names = m._names
    params = tuple(m.get_parameter(n) for n in names)

    def f(x, *p):
        return pt._EngineLoss.apply(m._network(torch.float64), names, "mse", 1, x, y, *p)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_module_backward_reaches_parameters_and_inputs_and_equals_fused():
    m = small("rnn", "gradient")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(3, 5, 2, dtype=torch.float64, generator=g)
    loss = (m(x)[:, 2:] - y[:, 2:]).square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    dx = x.grad.clone()
    m.zero_grad()
    x.grad = None
    fused = m.loss(x, y, test_begin=2)
    fused.backward()
    assert abs(fused.item() - loss.item()) <= 1e-14 * loss.item()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(x.grad, dx, rtol=1e-10, atol=1e-14)


def test_an_in_place_change_before_backward_is_detected():
    m = small("rnn", "hebbian")
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    out = m(x).sum()
    with torch.no_grad():
        m.get_parameter("rec.w_h").add_(1.0)
    with pytest.raises(RuntimeError):
        out.backward()


def _engine_vjp(m, x, d_out):
    """The parameter and input gradients of sum(d_out * m(x)) from the numpy API's vjp (which
    runs its own forward pass), for the module's current parameters."""
    net = m.to_network()
    grads, dx = net.vjp(x.detach().numpy(), d_out.detach().numpy(), input_grad=True)
    return grads, dx


@pytest.mark.parametrize("rule", RULES)
def test_outstanding_forwards_then_backwards_in_reverse_order(rule):
    # two calls of one module and a call of another, all outstanding, then backward in reverse
    m, other = small("lstm", rule), small("rnn", rule)
    g = torch.Generator().manual_seed(3)
    x1, x2 = (torch.randn(2, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
              for _ in range(2))
    x3 = torch.randn(3, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    d1, d2, d3 = (torch.randn(x.shape[:2] + (2,), dtype=torch.float64, generator=g)
                  for x in (x1, x2, x3))
    out1, out2, out3 = m(x1), m(x2), other(x3)
    for out, d, x, mod in ((out3, d3, x3, other), (out2, d2, x2, m), (out1, d1, x1, m)):
        mod.zero_grad()
        out.backward(d)
        want, want_dx = _engine_vjp(mod, x, d)
        for n, p in mod.named_parameters():
            np.testing.assert_array_equal(p.grad.numpy(), want[n], err_msg=n)
        np.testing.assert_array_equal(x.grad.numpy(), want_dx)


def test_retain_graph_allows_a_second_backward_without_it_a_clear_error():
    m = small("lstm", "gradient")
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    loss = m(x).square().sum()
    loss.backward(retain_graph=True)
    first = {n: p.grad.clone() for n, p in m.named_parameters()}
    loss.backward()  # the tape is read again: the gradients double exactly
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, 2 * first[n], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_a_tapes_memory_goes_with_its_graph():
    import gc
    from plastic import _native
    m = pt.PlasticRNN(task="cue-reward", hidden_size=16, seed=1)
    x = torch.from_numpy(plastic.episodes(task="cue-reward", batch=4)["inputs"])
    gc.collect()
    before = _native.live_tape_bytes()
    out = m(x)
    tape = out.grad_fn.tape
    assert tape.bytes > 4 * 20 * 16 and _native.live_tape_bytes() == before + tape.bytes
    loss = out.square().mean()
    loss.backward()
    del tape
    assert _native.live_tape_bytes() > before  # the graph still holds it
    del out, loss
    gc.collect()
    assert _native.live_tape_bytes() == before
    # no tape is made without a graph, and the outputs are the same
    with torch.no_grad():
        plain = m(x)
    assert _native.live_tape_bytes() == before
    np.testing.assert_array_equal(plain.numpy(), m(x).detach().numpy())


def test_the_numpy_api_tape():
    net = plastic.Network(task="cue-reward", hidden_size=16, seed=4, dtype="float64")
    b = plastic.episodes(task="cue-reward", batch=3, dtype="f64")
    outputs, tape = net.forward_with_tape(b["inputs"])
    np.testing.assert_array_equal(outputs, net.forward(b["inputs"])["outputs"])
    d = np.sign(outputs)
    grads, dx = net.vjp_with_tape(tape, d)
    want, want_dx = net.vjp(b["inputs"], d)
    for n in want:
        np.testing.assert_array_equal(grads[n], want[n], err_msg=n)
    np.testing.assert_array_equal(dx, want_dx)
    with pytest.raises(ValueError, match="d_outputs has shape"):
        net.vjp_with_tape(tape, d[:1])
    changed = net.copy()
    changed.set_parameters({"rec.w_h": net.parameters()["rec.w_h"] + 1.0})
    with pytest.raises(ValueError, match="parameters changed"):
        changed.vjp_with_tape(tape, d)
    with pytest.raises(ValueError, match="other float type"):
        net.astype("float32").vjp_with_tape(tape, d.astype(np.float32))
    with pytest.raises(ValueError, match="another configuration"):
        plastic.Network(task="cue-reward", hidden_size=8, dtype="float64").vjp_with_tape(tape, d)


def test_dtype_follows_the_parameters():
    m = pt.PlasticRNN(input_size=3, hidden_size=4, output_size=2)
    x = torch.randn(2, 3, 3)
    y32 = m(x)
    m.double()
    y64 = m(x.double())
    assert y32.dtype == torch.float32 and y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y32, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        m(x)  # float32 inputs, float64 parameters


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_tensors_on_another_device_come_back_there():
    m = small("lstm", "gradient").cuda()
    x = torch.randn(2, 4, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    out = m(x)
    assert out.device.type == "cuda"
    out.square().sum().backward()
    assert x.grad.device.type == "cuda"
    assert all(p.grad.device.type == "cuda" for p in m.parameters())


class CnnThenPlastic(torch.nn.Module):
    """A small CNN encodes each step's 1x8x8 image; the plastic RNN reads the codes."""

    def __init__(self, hidden=16, classes=2):
        super().__init__()
        self.cnn = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32, 6))
        self.rnn = pt.PlasticRNN(input_size=6 + classes, hidden_size=hidden, output_size=classes,
                                 plasticity="gradient", seed=0)

    def forward(self, images, labels_shown):
        b, t = images.shape[:2]
        codes = self.cnn(images.reshape(b * t, 1, 8, 8)).reshape(b, t, -1)
        return self.rnn(torch.cat([codes, labels_shown], dim=-1))


def make_task(gen, protos, b=16, t=6, classes=2):
    """Noisy presentations of two fixed 8x8 patterns; at every step the network must name the
    pattern shown (the label is shown along with it for the first two steps)."""
    order = torch.randint(0, classes, (b, t), generator=gen)
    images = protos[order] + 0.3 * torch.randn(b, t, 1, 8, 8, generator=gen)
    shown = torch.nn.functional.one_hot(order, classes).float()
    shown[:, 2:] = 0
    return images, shown, order


def test_a_cnn_in_front_learns():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    protos = torch.rand(2, 1, 8, 8, generator=gen)
    model = CnnThenPlastic()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        images, shown, order = make_task(gen, protos)
        logits = model(images, shown)[:, 2:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), order[:, 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    # both parts received gradients, and the loss fell well below chance (ln 2 = 0.69)
    assert model.cnn[0].weight.grad.abs().sum() > 0
    assert model.rnn.get_parameter("rec.alpha_w_h").grad.abs().sum() > 0
    assert last < 0.5 * first and last < 0.3, (first, last)
