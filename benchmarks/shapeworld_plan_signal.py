"""How much of a GRPO group's reward a right plan explains, on ShapeWorld training prompts.

For each training prompt (``--n`` per category and training phrasing family), 8 plans at
``--temp`` and one image each from the model: the share of groups whose plans are all wrong, all
right or mixed (only mixed groups carry a plan-correctness signal), the reward gap between right and
wrong plans inside mixed groups, and the share of the within-group reward variance that plan
correctness explains. Then the prompts whose 8 plans were all wrong, with three of their plans.

    python -m benchmarks.shapeworld_plan_signal --n 3 --temp 1.0
"""
import sys, numpy as np, torch, time, argparse
from t2i_r1.shapeworld.model import load_policy, evaluate_policy
from t2i_r1.shapeworld.grammar import prompt_set
from t2i_r1.shapeworld.phrasing import TRAIN_FAMILIES, FAMILIES
ap = argparse.ArgumentParser(); ap.add_argument("--model", default="t2i_r1/assets/shapeworld"); ap.add_argument("--temp", type=float, default=1.0); ap.add_argument("--n", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(1)
pol = load_policy(a.model)
prompts = prompt_set("train", a.n, seed=100, families=TRAIN_FAMILIES)
t = time.time()
r = evaluate_policy(pol, prompts, samples=8, seed=1, plan_temperature=a.temp)
print(f"{len(prompts)} prompts x 8, {time.time()-t:.0f}s")
ps = np.array(r.plan_scores).reshape(-1, 8); pr = np.array(r.partials).reshape(-1, 8); sc = np.array(r.scores).reshape(-1, 8)
rate = ps.mean(1)
print("plan right overall", ps.mean().round(3), "success", sc.mean().round(3), "partial", pr.mean().round(3))
print("per-prompt right-rate histogram (0, (0,.5], (.5,1), 1):", (rate==0).mean().round(2), ((rate>0)&(rate<=.5)).mean().round(2), ((rate>.5)&(rate<1)).mean().round(2), (rate==1).mean().round(2))
mixed = (rate > 0) & (rate < 1)
# within mixed groups: mean partial for right vs wrong plans, and share of group-advantage sign agreement
dr = []; ds=[]
for g in np.where(mixed)[0]:
    dr.append(pr[g][ps[g]==1].mean() - pr[g][ps[g]<1].mean()); ds.append(sc[g][ps[g]==1].mean() - sc[g][ps[g]<1].mean())
print(f"mixed groups {mixed.sum()}/{len(rate)}: partial(right)-partial(wrong) {np.mean(dr):.3f}  success(right)-success(wrong) {np.mean(ds):.3f}")
# within-group std of partial, and share of that variance explained by plan correctness
tot = pr.var(1).mean(); 
expl = np.mean([np.var(np.where(ps[g]==1, pr[g][ps[g]==1].mean() if (ps[g]==1).any() else 0, pr[g][ps[g]<1].mean() if (ps[g]<1).any() else 0)) for g in range(len(pr))])
print(f"within-group var of reward {tot:.4f}; explained by plan right/wrong {expl:.4f} ({expl/tot:.0%})")
by = {}
for i,p in enumerate(prompts):
    k = FAMILIES[p.phrasing].role
    by.setdefault(k, []).append(rate[i])
for k,v in by.items(): v=np.array(v); print(k, "n", len(v), "right", v.mean().round(3), "all-wrong", (v==0).mean().round(2), "all-right", (v==1).mean().round(2))
cats = {}
for i,p in enumerate(prompts): cats.setdefault(p.category, []).append((rate[i], pr[i].mean(), sc[i].mean()))
for k,v in cats.items(): v=np.array(v); print(f"{k:10s} right {v[:,0].mean():.2f} all-wrong {(v[:,0]==0).mean():.2f} partial {v[:,1].mean():.2f} success {v[:,2].mean():.2f}")
import random
aw = [g for g in range(len(rate)) if rate[g]==0]
for g in aw[:14]:
    print(f"[{prompts[g].phrasing}/{prompts[g].category}] {prompts[g].text!r}\n    plans: {sorted(set(r.plans[g*8:(g+1)*8]))[:3]}")
