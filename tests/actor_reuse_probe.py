"""Run by tests/test_search.py in a fresh interpreter (Ray is process-global): a PBT search of 2 members on
2 CPUs with a pure-Python trainable whose member 1 always scores higher, so member 0 exploits it while no
trial waits for a slot. Prints one JSON line: the actor pids that reported, and the restores of another
trial's checkpoint (exploits) and of a trial's own (it had yielded its slot and resumed)."""

import json
import os
import sys
import time

import ray
from ray import tune

from mutate.search.runner import NichedPBT, _PopulationVariants


class Member(tune.Trainable):
    def setup(self, config):
        self.step_ = 0
        open(os.path.join(config["out"], f"started_{config['member']['index']}"), "w").close()

    def step(self):
        # on a loaded machine one actor could start seconds after the other and finish its 16 steps first
        # (no exploit to observe): the first step waits until both members have started
        deadline = time.monotonic() + 120
        while self.step_ == 0 and time.monotonic() < deadline and not all(
                os.path.exists(os.path.join(self.config["out"], f"started_{i}")) for i in range(2)):
            time.sleep(0.05)
        time.sleep(0.05)
        self.step_ += 1
        return {"score": float(self.config["member"]["index"]) + self.step_ * 1e-3, "pid": os.getpid()}

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json"), "w") as f:
            json.dump({"step": self.step_, "trial": self.trial_id}, f)

    def load_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            state = json.load(f)
        self.step_ = state["step"]
        with open(os.path.join(self.config["out"], "restores"), "a") as f:
            f.write("own\n" if state["trial"] == self.trial_id else "other\n")

    def reset_config(self, new_config):
        self.config = new_config
        return True


def main(out):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pbt = NichedPBT(time_attr="training_iteration", perturbation_interval=2, quantile_fraction=0.5,
                    custom_explore_fn=lambda c: c, resample_probability=0.0, log_config=False)
    members = [{"index": i, "fraction": 1.0} for i in range(2)]
    tuner = tune.Tuner(
        tune.with_resources(Member, {"cpu": 1}),
        param_space={"member": tune.grid_search(members), "out": out},
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=pbt, reuse_actors=True,
                                    search_alg=_PopulationVariants()),
        run_config=tune.RunConfig(storage_path=out, verbose=0, stop={"training_iteration": 16},
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=2)))
    pids = set()
    for r in tuner.fit():
        pids |= {int(p) for p in r.metrics_dataframe["pid"]}
    path = os.path.join(out, "restores")
    kinds = open(path).read().split() if os.path.exists(path) else []
    print(json.dumps({"pids": sorted(pids), "exploits": kinds.count("other"), "resumes": kinds.count("own")}))


if __name__ == "__main__":
    main(sys.argv[1])
