// RUN: moe-opt %s --switchyard-bf16-vectors-through-memory-as-i16 | FileCheck %s

// A bf16 vector of 9 elements (d_model 9) goes through memory as i16: LLVM's
// x86 back end cannot select its load or store on a host with AVX-512 BF16.
// CHECK-LABEL: llvm.func @copy_row
// CHECK: %[[I:.*]] = llvm.load %{{.*}} {alignment = 2 : i64} : !llvm.ptr -> vector<9xi16>
// CHECK: %[[B:.*]] = llvm.bitcast %[[I]] : vector<9xi16> to vector<9xbf16>
// CHECK: %[[O:.*]] = llvm.bitcast %[[B]] : vector<9xbf16> to vector<9xi16>
// CHECK: llvm.store %[[O]], %{{.*}} {alignment = 2 : i64} : vector<9xi16>, !llvm.ptr
// CHECK-NOT: vector<9xbf16>, !llvm.ptr
llvm.func @copy_row(%src: !llvm.ptr, %dst: !llvm.ptr) {
  %v = llvm.load %src {alignment = 2 : i64} : !llvm.ptr -> vector<9xbf16>
  llvm.store %v, %dst {alignment = 2 : i64} : vector<9xbf16>, !llvm.ptr
  llvm.return
}

// Powers of two (the products' vectors), scalars and other element types
// stay as they are.
// CHECK-LABEL: llvm.func @left_alone
// CHECK: llvm.load %{{.*}} : !llvm.ptr -> vector<32xbf16>
// CHECK: llvm.load %{{.*}} : !llvm.ptr -> bf16
// CHECK: llvm.load %{{.*}} : !llvm.ptr -> vector<9xf16>
// CHECK: llvm.store %{{.*}}, %{{.*}} : vector<32xbf16>, !llvm.ptr
llvm.func @left_alone(%p: !llvm.ptr) {
  %a = llvm.load %p : !llvm.ptr -> vector<32xbf16>
  %b = llvm.load %p : !llvm.ptr -> bf16
  %c = llvm.load %p : !llvm.ptr -> vector<9xf16>
  llvm.store %a, %p : vector<32xbf16>, !llvm.ptr
  llvm.return
}

// Every width that is not a power of two, and the access's attributes kept.
// CHECK-LABEL: llvm.func @volatile_17
// CHECK: llvm.load volatile %{{.*}} {alignment = 2 : i64} : !llvm.ptr -> vector<17xi16>
// CHECK: llvm.store volatile %{{.*}}, %{{.*}} {alignment = 2 : i64} : vector<12xi16>, !llvm.ptr
llvm.func @volatile_17(%p: !llvm.ptr, %v: vector<12xbf16>) -> vector<17xbf16> {
  %a = llvm.load volatile %p {alignment = 2 : i64} : !llvm.ptr -> vector<17xbf16>
  llvm.store volatile %v, %p {alignment = 2 : i64} : vector<12xbf16>, !llvm.ptr
  llvm.return %a : vector<17xbf16>
}
