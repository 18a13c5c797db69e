"""Secure-aggregation overhead per device and at the aggregator, in process (no transport), for a
model-sized update: `python -m tools.secagg_overhead`. About 10 % of the devices drop before sending
their masked input, so the dropout path is measured too."""
import time, numpy as np
from edge_runtime.secure_aggregation import SecAggDevice, SecAggServer, FixedPoint
size=4757
for n in (22, 100):
    t=(2*n)//3+1; rng=np.random.default_rng(0)
    t0=time.perf_counter()
    devs={i:SecAggDevice(i,t) for i in range(1,n+1)}
    adv=[d.advertise() for d in devs.values()]
    sh=[d.share_keys(adv) for d in devs.values()]
    for d in devs.values(): d.receive_shares(sh)
    t1=time.perf_counter()
    ups={i:rng.normal(0,0.05,size) for i in devs}
    shared=sorted(devs)
    drop=set(range(1, n+1, 10))  # ~10% drop before input
    inp=[devs[i].masked_input(ups[i], shared) for i in devs if i not in drop]
    t2=time.perf_counter()
    arrived=sorted(m.device for m in inp); dropped=sorted(set(shared)-set(arrived))
    rep=[devs[i].unmask(arrived, dropped) for i in arrived]
    srv=SecAggServer(t,size,adverts={a.device:a for a in adv})
    t3=time.perf_counter(); tot=srv.sum(shared, inp, rep); t4=time.perf_counter()
    b_adv=64; b_sh=sum(len(v) for v in sh[0].to.values()); b_in=4*size; b_rep=66*len(arrived)
    print(f"n={n} t={t}: device bytes up {b_adv+b_sh+b_in+b_rep} (adverts {b_adv}, shares {b_sh}, masked input {b_in}, unmask {b_rep}) vs plain float32 ~{4*size}; "
          f"time: keys+shares {t1-t0:.2f}s all devices, masking {(t2-t1)/len(inp)*1000:.1f} ms/device, server unmask {t4-t3:.2f}s; dropped {len(dropped)}")
