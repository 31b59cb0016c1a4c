# A deliberately slow policy, so a call is still in flight when shutdown
# starts.
package tollgate

decision := {"allow": count(numbers.range(1, to_number(input.attributes.request.http.headers["x-work"]))) > 0}
