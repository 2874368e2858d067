import pytest

from mutate.operator.schedule import Schedule


def test_derived_decrement_reaches_zero_at_end_step():
    s = Schedule(begin_step=10, end_step=30, frequency=5)
    assert s.num_updates == 5 and s.alpha_decrement == pytest.approx(0.2)
    assert [s.alpha(t) for t in (0, 9, 10, 14, 15, 20, 25, 29, 30, 100)] == pytest.approx(
        [1, 1, 0.8, 0.8, 0.6, 0.4, 0.2, 0.2, 0.0, 0.0])
    assert [s.update_index(t) for t in (9, 10, 11, 15, 30, 35)] == [None, 0, None, 1, 4, None]
    assert s.final_step == 30


def test_explicit_decrement_without_end():
    s = Schedule(begin_step=0, frequency=10, alpha_decrement=0.25)
    assert s.num_updates == 4 and s.final_step == 30
    assert s.alpha(0) == 0.75 and s.alpha(29) == 0.25 and s.alpha(30) == 0.0


def test_decrement_that_does_not_divide_one_ends_at_exact_zero():
    s = Schedule(begin_step=0, frequency=1, alpha_decrement=0.3)
    assert s.num_updates == 4
    assert [s.alpha(t) for t in range(5)] == pytest.approx([0.7, 0.4, 0.1, 0.0, 0.0])


def test_graph_compression_names_are_accepted():
    a = Schedule(begin_compression_step=100, end_compression_step=200, compression_frequency=10,
                 alpha_decrement_value=0.1)
    b = Schedule(100, 200, 10, 0.1)
    assert a == b and a.final_step == 190


def test_hparams_string():
    with pytest.warns(UserWarning, match="use_tpu=False"):
        s = Schedule.from_hparams("name=svd,alpha_decrement_value=0.005,begin_compression_step=40000,"
                                  "end_compression_step=100000,compression_frequency=100,use_tpu=False,rank=200")
    assert (s.begin_step, s.end_step, s.frequency, s.alpha_decrement) == (40000, 100000, 100, 0.005)
    assert s.final_step == 40000 + 199 * 100
    assert s.ignored_hparams == {"name": "svd", "use_tpu": "False", "rank": "200"}
    with pytest.warns(UserWarning, match="some_future_key=1"):
        assert Schedule.from_hparams("end_compression_step=5,some_future_key=1").end_step == 5


@pytest.mark.parametrize("text, match", [
    ("begin_compression_step=x,end_compression_step=5", "must be a number.*begin_compression_step='x'"),
    ("begin_compresion_step=0,end_compression_step=5", "did you mean 'begin_compression_step'"),
    ("begin_compression_step", "not key=value"),
])
def test_bad_hparams(text, match):
    with pytest.raises(ValueError, match=match):
        Schedule.from_hparams(text)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"begin_step": -1, "end_step": 5}, ValueError, "begin_step=-1"),
    ({"begin_step": 10, "end_step": 5}, ValueError, "end_step=5"),
    ({"begin_step": 0, "end_step": 5, "frequency": 0}, ValueError, "frequency=0"),
    ({"begin_step": 0}, ValueError, "neither"),
    ({"begin_step": 0, "alpha_decrement": 0}, ValueError, "alpha_decrement=0"),
    ({"begin_step": 0, "alpha_decrement": 1.5}, ValueError, "alpha_decrement=1.5"),
    ({"begin_step": 0, "end_step": 10, "frequency": 5, "alpha_decrement": 0.1}, ValueError, "after end_step=10"),
    ({"begin_step": 0, "end_step": 10, "begin_compression_step": 3}, ValueError, "both"),
    ({"begin_step": 1.5, "end_step": 10}, TypeError, "begin_step=1.5"),
])
def test_bad_schedules(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Schedule(**kwargs)


def test_config_round_trip():
    for s in (Schedule(3, 50, 7), Schedule(0, None, 2, 0.3), Schedule(0, 99, 1)):
        assert Schedule.from_config(s.get_config()) == s
        assert Schedule.from_config(s.get_config()).final_step == s.final_step
