/** A Describe* filter as the domain takes it: a name from the resource's list and the values any of which may match. */
export interface Filter<N extends string = string> {
  name: N;
  values: string[];
}
