import type { FloatDType } from '../dtype';
import { Placement } from '../device';
import { describe, fail } from '../errors';
import { addon, AggregationCode, call, DivergenceCode, DTypeCode } from '../native';
import { Tensor } from '../tensor';
import {
  checkBoolean, checkEnum, checkKnownKeys, checkLayout, checkLogits, checkNumber, checkObject, checkRowShape, checkTargets, maskArg, targetsType,
  type TargetsInput,
} from '../validate';
import type { Aggregation } from './loss';

export type Divergence = 'forwardKL' | 'reverseKL' | 'jsd';

export interface DistillationInputs {
  /** Student logits [N, V] or [S, L, V] (float32 / float16 / bfloat16). */
  student: Tensor;
  /** Teacher logits, same shape; the dtype may differ from the student's. */
  teacher: Tensor;
  /** Token ids (N): rows with ignoreIndex leave the loss; needed for hardLabelWeight. */
  targets?: TargetsInput;
  /** Per-row 0/1 mask (N). */
  completionMask?: Tensor | ArrayLike<number | boolean>;
  /** Packed layout: S+1 row offsets. Default: [S, L, V] logits are S padded sequences; [N, V] rows are their own sequences. */
  seqOffsets?: ArrayLike<number> | BigInt64Array;
}

export interface DistillationOptions {
  /** 'forwardKL' KL(p_T‖p_S) (default), 'reverseKL' KL(p_S‖p_T), or 'jsd' (generalised JSD with beta). */
  divergence?: Divergence;
  /** JSD weight β in (0, 1): β·KL(p_T‖M) + (1−β)·KL(p_S‖M), M = β·p_T + (1−β)·p_S. Default 0.5. */
  beta?: number;
  /** Both distributions are softmax(logits / T). Default 1. */
  temperature?: number;
  ignoreIndex?: number;
  /** Adds hardLabelWeight · (−log p_S(target)) per row. Default 0. */
  hardLabelWeight?: number;
  /** As the GRPO loss (spec §4). Default 'tokenMean'. */
  aggregation?: Aggregation;
  normalizer?: number;
  maxCompletionLength?: number;
  /** Compute ∂loss/∂student (default true). */
  grad?: boolean;
  /** Write the gradient over the student logits. Default false. */
  inPlace?: boolean;
  /** Also return each row's (unweighted) divergence + hard-label term. Default false. */
  rowLoss?: boolean;
}

export interface DistillationResult {
  loss: number;
  /** Rows counted (Σ mask, ignored rows excluded). */
  tokens: number;
  /** ∂loss/∂student-logits in the student's dtype and shape (the student tensor itself with inPlace). */
  gradStudent?: Tensor<FloatDType>;
  rowLoss?: Tensor<'float32'>;
}

const KEYS = ['divergence', 'beta', 'temperature', 'ignoreIndex', 'hardLabelWeight', 'aggregation', 'normalizer', 'maxCompletionLength', 'grad', 'inPlace', 'rowLoss'] as const;

/**
 * Distillation loss (spec §7) from student and teacher logits with ∂loss/∂student: forward KL,
 * reverse KL or generalised JSD on temperature-scaled distributions, optionally mixed with the
 * hard-label log-prob term. No [N, V] intermediate.
 */
export async function distillationLoss(inputs: DistillationInputs, options: DistillationOptions = {}): Promise<DistillationResult> {
  const op = 'distillationLoss';
  checkObject(op, 'inputs', inputs);
  if (!inputs) fail('GK_INVALID_ARG', `${op}: inputs { student, teacher } are required`);
  checkObject(op, 'options', options);
  checkKnownKeys(op, 'input', inputs, ['student', 'teacher', 'targets', 'completionMask', 'seqOffsets']);
  checkKnownKeys(op, 'option', options, KEYS);
  const st = checkLogits(op, inputs.student);
  const te = checkLogits(op, inputs.teacher);
  const sShape = inputs.student.shape;
  const tShape = inputs.teacher.shape;
  if (sShape.length !== tShape.length || sShape.some((d, i) => d !== tShape[i]))
    fail('GK_SHAPE', `${op}: teacher logits [${tShape.join(', ')}] must match the student's [${sShape.join(', ')}]`);
  const divergence = options.divergence === undefined ? 'forwardKL' : checkEnum(op, 'options.divergence', options.divergence, ['forwardKL', 'reverseKL', 'jsd'] as const);
  const beta = options.beta === undefined ? 0.5 : checkNumber(op, 'options.beta', options.beta, { gt: 0, max: 0.999999 });
  const temperature = options.temperature === undefined ? 1 : checkNumber(op, 'options.temperature', options.temperature, { gt: 0, float32: true, reciprocal: true });
  const ignoreIndex = options.ignoreIndex === undefined ? -100 : checkNumber(op, 'options.ignoreIndex', options.ignoreIndex, { integer: true, min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER });
  const hardLabelWeight = options.hardLabelWeight === undefined ? 0 : checkNumber(op, 'options.hardLabelWeight', options.hardLabelWeight, { min: 0 });
  const aggregation = options.aggregation === undefined ? 'tokenMean' : checkEnum(op, 'options.aggregation', options.aggregation, ['seqMeanTokenMean', 'tokenMean', 'constant', 'seqMeanTokenSum'] as const);
  const normalizer = options.normalizer === undefined ? 0 : checkNumber(op, 'options.normalizer', options.normalizer, { gt: 0, reciprocal: true });
  const wantGrad = options.grad === undefined ? true : checkBoolean(op, 'options.grad', options.grad);
  const inPlace = options.inPlace === undefined ? false : checkBoolean(op, 'options.inPlace', options.inPlace);
  const wantRows = options.rowLoss === undefined ? false : checkBoolean(op, 'options.rowLoss', options.rowLoss);
  if (hardLabelWeight > 0 && inputs.targets === undefined) fail('GK_INVALID_ARG', `${op}: inputs.targets are required with hardLabelWeight > 0`);
  const n = st.n;
  const rows = sShape.slice(0, -1);
  checkRowShape(op, 'inputs.targets', inputs.targets, rows);
  checkRowShape(op, 'inputs.completionMask', inputs.completionMask, rows);
  const targets = inputs.targets === undefined ? undefined : checkTargets(op, inputs.targets, n, st.v, ignoreIndex);
  const so = inputs.seqOffsets;
  if (so !== undefined && !(Array.isArray(so) || (ArrayBuffer.isView(so) && !(so instanceof DataView))))
    fail('GK_SHAPE', `${op}: inputs.seqOffsets must be an array of S+1 row offsets, got ${describe(so)}`);
  // Without offsets: [S, L, V] logits are S padded sequences, [N, V] rows their own (N = 0: one empty sequence).
  const s = so !== undefined ? (so as ArrayLike<number>).length - 1 : sShape.length >= 3 ? sShape[0]! : Math.max(1, n);
  if (s < 1) fail('GK_SHAPE', `${op}: at least one sequence (row) is required`);
  const { seqOffsets, maxLen } = checkLayout(op, inputs.seqOffsets, s, n);
  const maxCompletionLength = options.maxCompletionLength === undefined ? maxLen : checkNumber(op, 'options.maxCompletionLength', options.maxCompletionLength, { integer: true, min: 1 });
  const mask = inputs.completionMask === undefined ? undefined : maskArg(op, 'inputs.completionMask', inputs.completionMask, n);
  const at = Placement.of(op, [inputs.student, inputs.teacher, inputs.targets, inputs.completionMask]);
  const grad = wantGrad && !inPlace ? at.array(st.dtype, n * st.v) : undefined;
  const rowLoss = wantRows ? at.f32(n) : undefined;
  const native = addon();
  const r = await at.run(call(op, () =>
    native.distillLoss({
      device: at.device, targetsType: targetsType(inputs.targets), n, v: st.v, student: st.data, studentDtype: DTypeCode[st.dtype], teacher: te.data, teacherDtype: DTypeCode[te.dtype],
      ...(targets ? { targets } : {}), ignoreIndex, ...(mask ? { mask } : {}), s, seqOffsets,
      divergence: DivergenceCode[divergence], beta, temperature, hardLabelWeight, aggregation: AggregationCode[aggregation],
      normalizer, maxCompletionLength, ...(grad ? { grad: grad as Float32Array | Uint16Array } : {}), ...(wantGrad && inPlace ? { gradInPlace: true } : {}),
      ...(rowLoss ? { rowLoss } : {}),
    }),
  ));
  const out: DistillationResult = { loss: r.loss, tokens: r.tokens };
  if (grad) out.gradStudent = at.tensor(grad, st.dtype, inputs.student.shape);
  else if (wantGrad) out.gradStudent = inputs.student as Tensor<FloatDType>;
  if (rowLoss) out.rowLoss = at.tensor(rowLoss, 'float32', inputs.student.shape.slice(0, -1));
  return out;
}
