#!/usr/bin/env python3
"""The data plane's module import graph: prints any cycle between modules
(a module and its own submodules excepted) and what each codec and the
message model import. Used to check the seams (issue 10): codecs depend on
the message model only, and the pipeline's import graph is acyclic.

usage: python3 scripts/import-graph.py
"""
import re,glob,os,sys
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','dataplane','src')
edges={}
def modname(path):
    rel=os.path.relpath(path,root)[:-3]
    parts=rel.split('/')
    if parts[-1]=='mod': parts=parts[:-1]
    return '::'.join(parts)
for f in glob.glob(root+'/**/*.rs',recursive=True):
    m=modname(f)
    if m in ('lib','main'): continue
    src=open(f).read()
    src=src.split('#[cfg(test)]')[0]
    deps=set()
    for u in re.findall(r'crate::([a-z_0-9]+(?:::[a-z_0-9]+)*)',src):
        parts=u.split('::')
        # resolve to the longest existing module prefix
        for k in range(len(parts),0,-1):
            cand='::'.join(parts[:k])
            if os.path.exists(os.path.join(root,*parts[:k])+'.rs') or os.path.exists(os.path.join(root,*parts[:k],'mod.rs')):
                deps.add(cand); break
    deps.discard(m)
    edges[m]=deps
# collapse to top-level for the report, but check cycles at module level
import itertools
def cycles(edges):
    res=[];index={};low={};st=[];on=set();c=[0]
    def sc(v):
        index[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in edges.get(v,()):
            if w not in index: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],index[w])
        if low[v]==index[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: res.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index: sc(v)
    return res
# ignore parent->child declared submodules (a parent module 'uses' its children)
e2={m:{d for d in ds if not d.startswith(m+'::') and not m.startswith(d+'::')} for m,ds in edges.items()}
print("cycles:",cycles(e2))
for m in sorted(e2):
    if m.startswith('codec') or m=='message' or m.startswith('message'):
        print(m,'->',sorted(e2[m]))
