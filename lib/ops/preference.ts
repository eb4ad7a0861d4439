import { describe, fail } from '../errors';
import { addon, call } from '../native';
import { Placement } from '../device';
import { Tensor } from '../tensor';
import { checkEnum, floatArg, checkKnownKeys, checkNumber, checkObject, type FloatInput } from '../validate';

export interface BradleyTerryInputs {
  /** Reward-model score of the chosen completion of each pair. */
  chosen: FloatInput;
  /** Score of the rejected completion of each pair. */
  rejected: FloatInput;
  /** Per-pair margin (e.g. from preference strength); overrides options.margin. */
  margins?: FloatInput;
}

export interface BradleyTerryOptions {
  /** Margin m in -log σ(r_chosen - r_rejected - m). Default 0. */
  margin?: number;
  /** 'mean' (default) or 'sum' over pairs. */
  reduction?: 'mean' | 'sum';
}

export interface BradleyTerryResult {
  loss: number;
  /** Fraction of pairs with r_chosen > r_rejected. */
  accuracy: number;
  /** Mean of r_chosen - r_rejected. */
  meanMargin: number;
  /** ∂loss/∂r_chosen and ∂loss/∂r_rejected, float32. */
  gradChosen: Tensor<'float32'>;
  gradRejected: Tensor<'float32'>;
}

/** The Bradley–Terry reward-model loss -log σ(r_chosen − r_rejected − margin) over preference pairs, with gradients and accuracy. */
export async function bradleyTerryLoss(inputs: BradleyTerryInputs, options: BradleyTerryOptions = {}): Promise<BradleyTerryResult> {
  const op = 'bradleyTerryLoss';
  checkObject(op, 'inputs', inputs);
  if (!inputs) fail('GK_INVALID_ARG', `${op}: inputs { chosen, rejected } are required`);
  checkObject(op, 'options', options);
  checkKnownKeys(op, 'input', inputs, ['chosen', 'rejected', 'margins']);
  checkKnownKeys(op, 'option', options, ['margin', 'reduction']);
  const c = inputs.chosen;
  const n = c instanceof Tensor ? c.size : (c as ArrayLike<number> | undefined)?.length;
  if (typeof n !== 'number') fail('GK_INVALID_ARG', `${op}: inputs.chosen (one score per pair) is required, got ${describe(c)}`);
  if (n < 1) fail('GK_SHAPE', `${op}: at least one preference pair is required`);
  const chosen = floatArg(op, 'inputs.chosen', c, n, { finite: true });
  const rejected = floatArg(op, 'inputs.rejected', inputs.rejected, n, { finite: true });
  const margins = inputs.margins === undefined ? undefined : floatArg(op, 'inputs.margins', inputs.margins, n, { finite: true });
  const margin = options.margin === undefined ? 0 : checkNumber(op, 'options.margin', options.margin);
  const reduction = options.reduction === undefined ? 'mean' : checkEnum(op, 'options.reduction', options.reduction, ['mean', 'sum'] as const);
  const at = Placement.of(op, [c, inputs.rejected, inputs.margins]);
  const gradChosen = at.f32(n);
  const gradRejected = at.f32(n);
  const native = addon();
  const r = await at.run(call(op, () =>
    native.bradleyTerryLoss({ device: at.device, n, chosen, rejected, ...(margins ? { margins } : {}), margin, sum: reduction === 'sum', gradChosen, gradRejected }),
  ));
  return { ...r, gradChosen: at.tensor(gradChosen, 'float32', [n]), gradRejected: at.tensor(gradRejected, 'float32', [n]) };
}
