export { formatReward, tagCountReward, extractAnswer } from './format';
export { normalizeNumber, accuracyReward } from './accuracy';
export { overlongPenalty, type OverlongOptions } from './overlong';
export {
  combineRewards, evaluateRewards,
  type NamedReward, type RewardContext, type RewardFunction, type RewardValue,
} from './combine';
